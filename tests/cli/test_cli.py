"""The command line: exit codes and the one line a user sees, with the system patched out."""

import re
import subprocess

import pytest
from typer.testing import CliRunner

from tailscale_wsl2 import __version__
from tailscale_wsl2.cli.app import app
from tailscale_wsl2.cli.firewall import firewall_app
from tailscale_wsl2.wsl import side
from tailscale_wsl2.wsl.side import Side

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


def test_every_command_keeps_its_help_text(program: list[str]) -> None:
    # The frozen build strips docstrings (optimize=2): help text must not come from them.
    for group, typer_app in (([], app), (["firewall"], firewall_app)):
        listing = subprocess.run(
            [*program, *group, "--help"], capture_output=True, text=True, check=True
        ).stdout
        for command in typer_app.registered_commands:
            assert command.callback is not None
            assert command.help
            name, summary = command.callback.__name__, " ".join(command.help.split()[:3])
            assert re.search(rf"^  {name} +{re.escape(summary)}", listing, re.M), listing
