"""install, uninstall, status and logs as a user meets them: one line for each bad input, and
nothing of the user's lost. The machine is a temporary root (tests/support/rooted.py)."""

import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tailscale_wsl2.cli import service
from tailscale_wsl2.cli.app import app
from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.install.plan import RUN_AS_MODULE, WslProgram
from tailscale_wsl2.install.running import RunningCopy
from tailscale_wsl2.install.systemd import UnitSpec, render_unit
from tailscale_wsl2.install.wsl_side import WslHost
from tailscale_wsl2.install.wslconf import effective_setting
from tailscale_wsl2.serve.state import HopHealth, RunState
from tailscale_wsl2.system import CommandResult
from tailscale_wsl2.wsl import side
from tailscale_wsl2.wsl.side import Side
from tests.install import samples
from tests.support.rooted import RootedSystem

runner = CliRunner()
UNIT = "/etc/systemd/system/tailscale-wsl2.service"
KEY = "/mnt/c/Users/alice/AppData/Local/tailscale-wsl2/link.key"
SYSTEMCTL = "/usr/bin/systemctl"
PROGRAM = WslProgram(("/usr/bin/python3", *RUN_AS_MODULE), frozen=False)


class Distro:
    """A WSL2 distro under a temporary root, with systemd or without."""

    def __init__(self, root: Path, *, systemd: bool, euid: int = 0) -> None:
        self.system = RootedSystem(root)
        self.systemd = systemd
        self.euid = euid
        self.running: RunningCopy | None = None

    def put(self, path: str, text: str) -> None:
        self.system.at(path).parent.mkdir(parents=True, exist_ok=True)
        self.system.at(path).write_bytes(text.encode())

    def exists(self, path: str) -> bool:
        always = {SYSTEMCTL, KEY, "/run/systemd/system"} if self.systemd else {KEY}
        return path in always or self.system.at(path).exists()

    def run(self, argv: Sequence[str]) -> CommandResult | None:
        answers = {
            SYSTEMCTL: CommandResult(1, "disabled\n"),
            "cmd.exe": CommandResult(0, "C:\\Users\\alice\\AppData\\Local\r\n"),
            "wslpath": CommandResult(0, "/mnt/c/Users/alice/AppData/Local\n"),
        }
        return answers[argv[0]]

    def host(self) -> WslHost:
        return WslHost(
            read_bytes=self.system.read_bytes,
            exists=self.exists,
            run=self.run,
            euid=self.euid,
            environ={"SUDO_GID": "1000"},
            wsl1=False,
            program=PROGRAM,
            running=self.running,
        )


@pytest.fixture
def distro(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Distro:
    machine = Distro(tmp_path / "root", systemd=True)
    machine.system.root.mkdir()
    monkeypatch.setattr(side, "read_side", lambda: Side.WSL2)
    monkeypatch.setattr(service, "wsl_host", machine.host)
    monkeypatch.setattr(service, "local_system", lambda: machine.system)
    monkeypatch.setattr(service, "_read_bytes", machine.system.read_bytes)
    monkeypatch.setattr(service, "running_state", lambda half: (None, None))
    return machine


def one_line_failure(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_install_without_root_is_one_line_with_the_sudo_command(distro: Distro) -> None:
    distro.euid = 1000
    before = distro.system.snapshot()
    line = one_line_failure(["install", "--socket-mode", "666", "--max-connections", "64"])
    assert line == (
        "tailscale-wsl2: installing the WSL2 half needs root (it changes /etc); run `sudo "
        "/usr/bin/python3 -P -m tailscale_wsl2 install --socket-mode 0666 --max-connections 64`"
    )
    assert distro.system.snapshot() == before
    assert distro.system.commands == []


def test_a_wsl_conf_that_is_not_valid_is_one_line_and_kept(distro: Distro) -> None:
    distro.systemd = False
    distro.put("/etc/wsl.conf", samples.SEMICOLON_COMMENT.replace("true", "false"))
    before = distro.system.snapshot()
    line = one_line_failure(["install"])
    assert line.startswith("tailscale-wsl2: /etc/wsl.conf line 3: `;` does not start a comment")
    assert distro.system.snapshot() == before


def test_a_unit_the_user_edited_is_one_line_and_kept(distro: Distro) -> None:
    edited = render_unit(UnitSpec("/usr/local/bin/tailscale-wsl2", ("up",), 1000))
    distro.put(UNIT, edited.replace("RestartSec=5", "RestartSec=60"))
    before = distro.system.snapshot()
    line = one_line_failure(["install", "--port", "5000"])
    assert line == (
        f"tailscale-wsl2: {UNIT} was edited by hand since tailscale-wsl2 install wrote it; "
        "keep it, or replace it with `sudo /usr/bin/python3 -P -m tailscale_wsl2 install "
        "--port 5000 --force`"
    )
    assert distro.system.snapshot() == before
    assert one_line_failure(["uninstall", "--purge"]).endswith(
        "`sudo /usr/bin/python3 -P -m tailscale_wsl2 uninstall --purge --force`"
    )
    assert distro.system.snapshot() == before
    # The fix, copied, installs what was asked for: the user's --port too.
    fix = shlex.split(line.rpartition("`sudo ")[2].rstrip("`"))
    command = len(PROGRAM.command)
    assert fix[:command] == list(PROGRAM.command)
    assert runner.invoke(app, fix[command:]).exit_code == 0
    assert " up --port 5000 " in distro.system.at(UNIT).read_text()


def test_an_older_copy_still_running_is_one_line(distro: Distro) -> None:
    distro.running = RunningCopy(4321, "/home/alice/Downloads/tailscale-wsl2", ("up",))
    distro.put("/etc/wsl.conf", samples.UBUNTU_WITH_USER)
    before = distro.system.snapshot()
    line = one_line_failure(["install"])
    assert line == (
        "tailscale-wsl2: tailscale-wsl2 already runs here, started by hand (pid 4321: "
        "/home/alice/Downloads/tailscale-wsl2 up), and the installed copy could not serve "
        "beside it; stop it (Ctrl+C in its terminal, or `sudo kill 4321`), then run install again"
    )
    assert distro.system.commands == []
    assert distro.system.snapshot() == before


def test_no_systemd_and_no_wsl_conf_writes_one_and_says_when_it_starts(distro: Distro) -> None:
    distro.systemd = False
    result = runner.invoke(app, ["install"])
    assert result.exit_code == 0, result.output
    conf = distro.system.at("/etc/wsl.conf").read_text()
    assert (effective_setting(conf, "boot.command") or "").startswith("TAILSCALE_WSL2_BOOT=1")
    assert result.stdout.splitlines() == [
        "note: WSL reads /etc/wsl.conf when it starts: run `wsl --shutdown` in Windows, then "
        "open WSL again (it starts the WSL2 half)",
        "installed: the WSL2 half, started by the [boot] command in /etc/wsl.conf; "
        "`tailscale-wsl2 status` shows it",
    ]


def test_with_systemd_install_writes_the_unit_and_restarts_the_service(distro: Distro) -> None:
    distro.put("/etc/wsl.conf", samples.UBUNTU_WITH_USER)
    result = runner.invoke(app, ["install", "--port", "5000"])
    assert result.exit_code == 0, result.output
    unit = distro.system.at(UNIT).read_text()
    assert f"-m tailscale_wsl2 up --port 5000 --key-file {KEY}\n" in unit
    assert distro.system.commands[-1] == (SYSTEMCTL, "restart", "tailscale-wsl2.service")
    assert distro.system.at("/etc/wsl.conf").read_text() == samples.UBUNTU_WITH_USER
    # Upgrading: the same command again, the unit rewritten (ours, unchanged since).
    assert runner.invoke(app, ["install", "--port", "5001"]).exit_code == 0
    assert "up --port 5001 " in distro.system.at(UNIT).read_text()


@pytest.mark.parametrize("systemd", [True, False], ids=["systemd", "boot command"])
def test_the_dry_run_changes_nothing_and_shows_everything_install_then_does(
    distro: Distro, systemd: bool
) -> None:
    distro.systemd = systemd
    distro.put("/etc/wsl.conf", samples.NETWORK_FIX)
    before = distro.system.snapshot()
    distro.euid = 1000  # a dry run needs no root
    result = runner.invoke(app, ["install", "--port", "5000", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert distro.system.snapshot() == before
    assert distro.system.commands == []
    shown = result.stdout

    distro.euid = 0
    assert runner.invoke(app, ["install", "--port", "5000"]).exit_code == 0
    written = {
        path: data for path, data in distro.system.snapshot().items() if before.get(path) != data
    }
    assert written, "install wrote nothing"
    # Every file install wrote, by its full path with its whole content; every command.
    for path, data in written.items():
        assert f"--- write {path} (mode 0644) ---\n{data.decode()}--- end of {path} ---\n" in (
            shown
        )
    for argv in distro.system.commands:
        assert f"run: {shlex.join(argv)}\n" in shown
    assert shown.count("--- write ") == len(written)
    assert shown.count("\nrun: ") + shown.startswith("run: ") == len(distro.system.commands)


def test_windows_exe_that_is_not_one_is_one_line(distro: Distro) -> None:
    assert one_line_failure(["install", "--windows-exe", "/nowhere/t.exe"]) == (
        "tailscale-wsl2: --windows-exe /nowhere/t.exe: no such .exe; pass the path of "
        "tailscale-wsl2.exe as WSL sees it, e.g. /mnt/c/Users/NAME/Downloads/tailscale-wsl2.exe"
    )


@pytest.mark.skipif(sys.platform == "win32", reason="the check is for the other platform")
def test_the_windows_half_is_installed_on_windows(distro: Distro) -> None:
    assert one_line_failure(["install", "--side", "windows"]) == (
        "tailscale-wsl2: the Windows half is installed on Windows; run `tailscale-wsl2.exe "
        "install` in Windows (from WSL2, install's --windows-exe option takes the .exe's path)"
    )


def test_a_bad_socket_mode_is_a_usage_error(distro: Distro) -> None:
    result = runner.invoke(app, ["install", "--socket-mode", "rw-rw----"])
    assert result.exit_code == 2
    assert "not an octal file mode: 'rw-rw----'" in result.stderr


STATE = RunState(
    half="wsl",
    pid=4242,
    process_start=None,
    executable="/usr/local/bin/tailscale-wsl2",
    version="0.1.0",
    started="2026-12-03T10:00:00Z",
    arguments=("up", "--key-file", KEY),
    listening="/var/run/tailscale/tailscaled.sock",
    relaying_to="the Windows half of tailscale-wsl2 at 172.27.64.1:41113",
    next_hop=HopHealth("reachable", "", "2026-12-03T10:00:01Z"),
)


@pytest.mark.parametrize(
    ("running", "stale", "exit_code", "summary"),
    [
        (STATE, None, 0, "tailscale-wsl2 (WSL2 half): running, next hop reachable"),
        (
            replace(STATE, next_hop=HopHealth("unreachable", "down; fix it")),
            None,
            1,
            "tailscale-wsl2 (WSL2 half): running, next hop unreachable: not healthy",
        ),
        (None, STATE, 1, "tailscale-wsl2 (WSL2 half): not running (installed)"),
    ],
)
def test_status_exits_0_only_when_running_and_healthy(
    distro: Distro,
    monkeypatch: pytest.MonkeyPatch,
    running: RunState | None,
    stale: RunState | None,
    exit_code: int,
    summary: str,
) -> None:
    distro.put(UNIT, render_unit(UnitSpec("/usr/local/bin/tailscale-wsl2", ("up",), 1000)))
    monkeypatch.setattr(service, "running_state", lambda half: (running, stale))
    result = runner.invoke(app, ["status"])
    assert result.exit_code == exit_code
    assert result.stdout.splitlines()[0] == summary
    assert "log:        journalctl -u tailscale-wsl2.service" in result.stdout
    document = json.loads(runner.invoke(app, ["status", "--json"]).stdout)
    assert document["healthy"] is (exit_code == 0)
    assert document["installed"]["how"] == "the systemd service tailscale-wsl2.service"
    assert (document["running"] or {}).get("pid") == (running.pid if running else None)
    assert (document["stale_state"] or {}).get("pid") == (stale.pid if stale else None)


def test_logs_without_any_log_is_one_line(distro: Distro) -> None:
    assert one_line_failure(["logs"]).startswith(
        "tailscale-wsl2: this half is not installed, and no running half writes a log file"
    )


def test_logs_of_a_running_half_with_a_log_file(
    distro: Distro, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = tmp_path / "wsl.log"
    log.write_text("".join(f"line {number}\n" for number in range(100)))
    state = replace(STATE, log_file=str(log))
    monkeypatch.setattr(service, "running_state", lambda half: (state, None))
    result = runner.invoke(app, ["logs", "-n", "3"])
    assert result.exit_code == 0
    assert result.stdout == "line 97\nline 98\nline 99\n"


def test_logs_of_the_systemd_service_come_from_the_journal(
    distro: Distro, monkeypatch: pytest.MonkeyPatch
) -> None:
    distro.put(UNIT, render_unit(UnitSpec("/usr/local/bin/tailscale-wsl2", ("up",), 1000)))
    monkeypatch.setattr(service, "_journalctl", lambda: "/usr/bin/journalctl")
    result = runner.invoke(app, ["logs", "-f"])
    assert result.exit_code == 0
    assert distro.system.commands == [
        (
            "/usr/bin/journalctl",
            "--unit",
            "tailscale-wsl2.service",
            "--lines",
            "50",
            "--no-pager",
            "--follow",
        )
    ]


def test_up_s_log_file_takes_the_log_and_standard_error_when_there_is_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The windowless Windows copy has no standard streams: its one-line error and any
    traceback must land in the log file."""
    import logging  # noqa: PLC0415

    log = tmp_path / "logs" / "tailscale-wsl2.log"
    monkeypatch.setattr(sys, "stderr", None)
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()
    try:
        service.start_logging(False, log)
        logging.getLogger("tailscale_wsl2.test").info("listening on the socket")
        assert sys.stderr is not None
        sys.stderr.write("tailscale-wsl2: a one-line error; its fix\n")
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = saved
    lines = log.read_text().splitlines()
    assert lines[0].endswith(" listening on the socket")
    assert lines[1] == "tailscale-wsl2: a one-line error; its fix"


@pytest.mark.parametrize(
    ("where", "what", "fix"),
    [
        (
            "folder",
            "the log {log} is a folder",
            "pass a file in it: --log-file {log}/tailscale-wsl2.log",
        ),
        (
            "under a file",
            "cannot write the log {log}/x.log: a file stands where a folder of its path should",
            "pass a --log-file in a folder you may write to",
        ),
    ],
)
def test_a_log_file_that_cannot_be_written_is_one_line_before_anything_runs(
    tmp_path: Path, where: str, what: str, fix: str
) -> None:
    """The handler opens the file only at its first line: unchecked, each line logged would
    print a traceback instead."""
    log = tmp_path / "log"
    if where == "folder":
        log.mkdir()
        given = log
    else:
        log.write_text("a file\n")
        given = log / "x.log"
    with pytest.raises(ActionableError) as caught:
        service.start_logging(False, given)
    assert (caught.value.what, caught.value.fix) == (
        what.format(log=log),
        fix.format(log=log),
    )


def test_install_records_only_the_options_given_with_paths_made_absolute(
    distro: Distro, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    distro.put("/etc/wsl.conf", samples.UBUNTU_SHIPPED)
    result = runner.invoke(app, ["install", "--socket", "relative.sock", "--key-file", "k"])
    assert result.exit_code == 0, result.output
    unit = distro.system.at(UNIT).read_text()
    assert f"up --socket {tmp_path}/relative.sock --key-file {tmp_path}/k\n" in unit
    assert runner.invoke(app, ["install", "--port", "41113", "--socket-mode", "660"]).exit_code == 0
    unit = distro.system.at(UNIT).read_text()
    assert f"-m tailscale_wsl2 up --key-file {KEY}\n" in unit  # defaults are not recorded


def test_windows_exe_gets_the_options_as_the_windows_half_names_them(
    distro: Distro, tmp_path: Path
) -> None:
    """The .exe's install runs on Windows: a WSL path means nothing there, and a WSL2 half
    that dials loopback needs a Windows half listening on loopback."""
    exe = tmp_path / "tailscale-wsl2.exe"
    exe.write_bytes(b"MZ")
    distro.put("/etc/wsl.conf", samples.UBUNTU_WITH_USER)
    result = runner.invoke(
        app,
        [
            "install",
            "--windows-exe",
            str(exe),
            "--port",
            "5000",
            "--host-ip",
            "127.0.0.1",
            "--key-file",
            "/mnt/c/Users/a/k.key",
            "--force",
        ],
    )
    assert result.exit_code == 0, result.output
    assert distro.system.commands[0] == (
        str(exe),
        "install",
        "--port",
        "5000",
        "--listen",
        "127.0.0.1",
        "--key-file",
        "C:\\Users\\a\\k.key",
        "--force",
    )
    # The WSL2 half keeps its own names: the WSL path, the host address it dials.
    unit = distro.system.at(UNIT).read_text()
    assert " up --port 5000 --host-ip 127.0.0.1 --key-file /mnt/c/Users/a/k.key\n" in unit
