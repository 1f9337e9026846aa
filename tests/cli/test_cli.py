"""The command line: exit codes, the one line a user sees, and the conventions every command
follows (-h, help, completion, colour), with the system patched out; the package and the frozen
binary alike where they can differ (help text, completion, terminal detection)."""

import os
import re
import shlex
import subprocess
from pathlib import Path

import click
import pytest
import shellingham
import typer
from typer.testing import CliRunner

from tailscale_wsl2 import __version__
from tailscale_wsl2.cli.app import app
from tailscale_wsl2.cli.firewall import firewall_app
from tailscale_wsl2.plan.halves import Options
from tailscale_wsl2.serve import up as serve_up
from tailscale_wsl2.wsl import side
from tailscale_wsl2.wsl.side import Side
from tests.support.terminal import run_on_terminal

runner = CliRunner()


@pytest.fixture(autouse=True)
def plain_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(side, "read_side", lambda: Side.LINUX)


def test_version_names_the_detected_platform() -> None:
    for args in (["--version"], ["version"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0
        assert result.output == f"tailscale-wsl2 {__version__} (detected: linux)\n"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["up"],
            "tailscale-wsl2: this is neither Windows nor WSL: tailscale-wsl2 connects the "
            "`tailscale` CLI inside WSL2 to Tailscale on the Windows host; run it on Windows "
            "and inside WSL2, or force a half with --side windows|wsl",
        ),
        (
            ["up", "--side", "wsl", "--upstream", "localhost:1"],
            "tailscale-wsl2: --upstream: unknown endpoint kind 'localhost' in 'localhost:1' "
            "(tcp, unix or npipe)",
        ),
        (
            ["up", "--side", "wsl", "--host-ip", "host.internal"],
            "tailscale-wsl2: --host-ip: not an IP address: 'host.internal'; "
            "pass an IPv4 address to --host-ip",
        ),
        (
            ["up", "--side", "windows"],
            "tailscale-wsl2: cannot find the vEthernet (WSL) adapter: ipconfig exists only "
            "on Windows; pass --listen with the address to listen on",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_1(args: list[str], line: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [line]


def test_verbose_adds_the_traceback() -> None:
    result = runner.invoke(app, ["up", "-v"])
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("tailscale-wsl2: this is neither Windows")


def test_no_arguments_shows_help() -> None:
    result = runner.invoke(app, [])
    assert "up" in result.output
    assert "Usage:" in result.output


def test_every_command_keeps_its_whole_summary_in_the_listing(program: list[str]) -> None:
    # The frozen build strips docstrings (optimize=2): help text must not come from them. On an
    # 80-column terminal click cuts a summary that does not fit ("..."): each must fit whole.
    for group, typer_app in (([], app), (["firewall"], firewall_app)):
        listing = subprocess.run(
            [*program, *group, "--help"],
            capture_output=True,
            text=True,
            check=True,
            env=clean_environment(COLUMNS="80"),
        ).stdout
        for command in typer_app.registered_commands:
            assert command.callback is not None
            summary = command.short_help or command.help
            assert summary
            name = command.callback.__name__
            assert re.search(rf"^  {name} +{re.escape(summary)}$", listing, re.M), listing


# The conventions every command follows (cli/common.py), as a user meets them.

SCRIPT_MARKERS = {
    "bash": "complete -o default -F _tailscale_wsl2_completion tailscale-wsl2",
    "zsh": "#compdef tailscale-wsl2",
    "fish": "complete --command tailscale-wsl2 ",
    "powershell": "Register-ArgumentCompleter -Native -CommandName tailscale-wsl2 ",
    "pwsh": "Register-ArgumentCompleter -Native -CommandName tailscale-wsl2 ",
}


def command_paths(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group under `command`, as the arguments that reach it."""
    paths = [path]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            paths += command_paths(sub, (*path, name))
    return paths


def clean_environment(**settings: str) -> dict[str, str]:
    """This environment without the variables that change colour or width, plus `settings`."""
    dropped = ("NO_COLOR", "TERM", "COLUMNS", "_TAILSCALE_WSL2_COMPLETE")
    return {k: v for k, v in os.environ.items() if k not in dropped} | settings


def test_every_command_takes_dash_h_as_help() -> None:
    paths = command_paths(typer.main.get_command(app))
    assert ("firewall", "add") in paths
    for path in paths:
        short, long = runner.invoke(app, [*path, "-h"]), runner.invoke(app, [*path, "--help"])
        assert short.exit_code == 0, (path, short.output)
        assert short.stdout.startswith("Usage: ")
        assert short.stdout == long.stdout


@pytest.mark.parametrize("group", [[], ["firewall"]])
def test_a_group_without_a_command_prints_help_on_stdout_and_exits_2(group: list[str]) -> None:
    result = runner.invoke(app, group)
    assert result.exit_code == 2
    assert result.stdout.startswith("Usage: ")
    assert "Commands:" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize(("typo", "command"), [(["upp"], "up"), (["firewall", "ad"], "add")])
def test_a_typo_gets_one_suggestion_and_exit_2(typo: list[str], command: str) -> None:
    result = runner.invoke(app, typo)
    assert result.exit_code == 2
    assert result.stderr.count("Did you mean") == 1
    assert f"Did you mean '{command}'?" in result.stderr


def test_the_exit_statuses_are_documented_in_the_help() -> None:
    assert "Exit status: 0 success, 1 failure, 2 bad usage." in runner.invoke(app, ["-h"]).stdout


@pytest.mark.parametrize("mode", ["rw-rw----", "999", "01000", ""])
def test_a_bad_socket_mode_is_bad_usage(mode: str) -> None:
    result = runner.invoke(app, ["up", "--side", "wsl", "--socket-mode", mode])
    assert result.exit_code == 2
    assert "Invalid value for '--socket-mode': not an octal file mode" in result.stderr


@pytest.mark.parametrize(("given", "mode"), [([], 0o660), (["--socket-mode", "0640"], 0o640)])
def test_the_socket_mode_reaches_the_plan_as_a_number(
    monkeypatch: pytest.MonkeyPatch, given: list[str], mode: int
) -> None:
    started: list[Options] = []
    monkeypatch.setattr(serve_up, "start", lambda options, **_: started.append(options))
    result = runner.invoke(app, ["up", "--side", "wsl", *given])
    assert result.exit_code == 0, result.output
    assert [options.socket_mode for options in started] == [mode]


@pytest.mark.parametrize("shell", sorted(SCRIPT_MARKERS))
def test_show_completion_prints_the_named_shells_script(program: list[str], shell: str) -> None:
    done = subprocess.run(
        [*program, "--show-completion", shell], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert SCRIPT_MARKERS[shell] in done.stdout
    assert "_TAILSCALE_WSL2_COMPLETE" in done.stdout


def test_show_completion_without_a_shell_detects_the_one_it_runs_in(program: list[str]) -> None:
    # bash is the parent process here (`; true` keeps it from exec-ing the program), and the
    # detection must be in the frozen binary too.
    command = " ".join(shlex.quote(word) for word in [*program, "--show-completion"])
    done = subprocess.run(
        ["/bin/bash", "-c", f"{command}; true"], capture_output=True, text=True, check=False
    )
    assert SCRIPT_MARKERS["bash"] in done.stdout, done.stderr


def test_the_completion_scripts_get_answers_from_the_program(program: list[str]) -> None:
    # What the bash script runs on Tab after `tailscale-wsl2 do`.
    done = subprocess.run(
        program,
        capture_output=True,
        text=True,
        check=False,
        env=clean_environment(
            _TAILSCALE_WSL2_COMPLETE="complete_bash", COMP_WORDS="tailscale-wsl2 do", COMP_CWORD="1"
        ),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["doctor"]


def test_an_unknown_shell_is_bad_usage() -> None:
    result = runner.invoke(app, ["--show-completion", "csh"])
    assert result.exit_code == 2
    assert "'csh' is not one of bash, zsh, fish, powershell, pwsh" in result.stderr


def test_an_undetectable_shell_is_bad_usage_naming_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shellingham, "detect_shell", lambda: ("cmd", "cmd.exe"))
    result = runner.invoke(app, ["--install-completion"])
    assert result.exit_code == 2
    assert "cannot tell which shell this is (cmd)" in result.stderr
    assert "tailscale-wsl2 --install-completion bash" in result.stderr


def test_install_completion_writes_the_script_and_loads_it_from_bashrc(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    result = runner.invoke(app, ["--install-completion", "bash"])
    assert result.exit_code == 0, result.output
    script = tmp_path / ".bash_completions" / "tailscale-wsl2.sh"
    assert SCRIPT_MARKERS["bash"] in script.read_text()
    assert f"source '{script}'" in (tmp_path / ".bashrc").read_text()


@pytest.mark.parametrize("shell", ["powershell", "pwsh"])
def test_install_completion_leaves_the_powershell_execution_policy_alone(
    monkeypatch: pytest.MonkeyPatch, shell: str
) -> None:
    ran: list[object] = []
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: ran.append(args))
    result = runner.invoke(app, ["--install-completion", shell])
    assert result.exit_code == 1
    assert ran == []
    assert result.stderr.splitlines() == [
        "tailscale-wsl2: not installing PowerShell completion: typer's installer sets the "
        "execution policy to Unrestricted; add this line to your profile (notepad $PROFILE): "
        f"tailscale-wsl2 --show-completion {shell} | Out-String | Invoke-Expression"
    ]


def test_doctor_colours_its_marks_and_summary_on_a_terminal_only(program: list[str]) -> None:
    on_terminal = run_on_terminal([*program, "doctor"], clean_environment())
    assert on_terminal.status == 1, on_terminal.stderr
    assert "[\x1b[31m✗\x1b[0m] platform" in on_terminal.stdout
    assert "\x1b[31mdoctor: 1 failure (1 check)\x1b[0m" in on_terminal.stdout
    piped = subprocess.run(
        [*program, "doctor"], capture_output=True, text=True, check=False, env=clean_environment()
    )
    assert piped.returncode == 1
    assert "[✗] platform" in piped.stdout
    assert "\x1b" not in piped.stdout


@pytest.mark.parametrize(
    ("option", "environment"),
    [(["--no-color"], {}), ([], {"NO_COLOR": "1"}), ([], {"TERM": "dumb"})],
)
def test_doctor_has_no_colour_when_told_so(
    program: list[str], option: list[str], environment: dict[str, str]
) -> None:
    run = run_on_terminal([*program, "doctor", *option], clean_environment(**environment))
    assert run.status == 1, run.stderr
    assert "[✗] platform" in run.stdout
    assert "\x1b" not in run.stdout
