"""The Windows half's install, run by the frozen .exe under Wine, in Wine's own user profile.

What Wine lets this prove: install copies the program as a windowless (GUI-subsystem) copy and
registers the task with Wine's schtasks; the copy runs as the task would run it, writes its log
and its state, and `status` reads them; killing the copy's bootloader (as Task Scheduler's End
and logoff do) stops the relay, which removes its state; uninstall removes the copy. What it
cannot: Wine's schtasks does not implement /Query, /Run or /End (they do nothing and exit 0),
so the task is neither seen nor started by install, and its trigger and action are dropped on
registration (tests/install/test_windows_task_wine.py). Wine also hands a GUI program the
standard streams of the shell that started it, so whether a window shows is Windows' to prove.
"""

import getpass
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tailscale_wsl2.install.windowless import GUI_SUBSYSTEM, pe_header_fields
from tests.support.ci import require
from tests.support.sockets import free_tcp_port
from tests.support.wine_chain import (
    WINE_TEST_EXE,
    WINRUN,
    prepare_wine,
    start_wine_process,
)

pytestmark = [pytest.mark.wine, pytest.mark.frozen]

WINE_CACHE = Path(
    os.environ.get("TSWSL_WINE_CACHE", Path.home() / ".cache" / "tailscale-wsl2" / "wine")
)
DRIVE_C = WINE_CACHE / "prefix" / "drive_c"
LOCAL = DRIVE_C / "users" / getpass.getuser() / "AppData" / "Local"
LOCAL_WINDOWS = f"C:\\users\\{getpass.getuser()}\\AppData\\Local"
INSTALLED = LOCAL / "Programs" / "tailscale-wsl2" / "tailscale-wsl2w.exe"
OURS = LOCAL / "tailscale-wsl2"
TASK = DRIVE_C / "windows" / "system32" / "tasks" / "tailscale-wsl2"


def exe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(WINRUN), str(WINE_TEST_EXE), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def eventually(condition: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.2)


@pytest.fixture
def wine_profile() -> Iterator[None]:
    require(WINE_TEST_EXE.exists(), f"no Windows build at {WINE_TEST_EXE}: make build-windows-test")
    prepare_wine("install the Windows half")
    assert not INSTALLED.exists(), f"{INSTALLED} is there already"
    assert not TASK.exists(), f"{TASK} is there already"
    try:
        yield
    finally:
        subprocess.run(
            [str(WINRUN), "schtasks", "/Delete", "/TN", "tailscale-wsl2", "/F"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        INSTALLED.unlink(missing_ok=True)
        for folder in (INSTALLED.parent, INSTALLED.parent.parent):
            if folder.exists() and not any(folder.iterdir()):
                folder.rmdir()
        for log in (OURS / "logs").glob("tailscale-wsl2.log*"):
            log.unlink()
        for folder in (OURS / "logs", OURS):
            if folder.exists() and not any(folder.iterdir()):
                folder.rmdir()


def test_install_run_status_kill_and_uninstall_under_wine(
    wine_profile: None, tmp_path: Path
) -> None:
    port = free_tcp_port()
    options = ("--listen", "127.0.0.1", "--port", str(port), "--insecure-no-auth")
    installed = exe("install", *options)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert installed.stdout.startswith("installed: the Windows half")
    assert pe_header_fields(INSTALLED.read_bytes())[0] == GUI_SUBSYSTEM
    assert TASK.exists()  # registered with Wine's Task Scheduler

    # Wine's schtasks /Run does nothing: start the copy as the task runs it.
    log = f"{LOCAL_WINDOWS}\\tailscale-wsl2\\logs\\tailscale-wsl2.log"
    task = start_wine_process(
        [str(WINRUN), str(INSTALLED), "up", *options, "--log-file", log], tmp_path / "task.out"
    )
    state_file = OURS / "state-windows.json"
    log_file = OURS / "logs" / "tailscale-wsl2.log"
    try:
        # The installed copy's own state: a half killed outright in an earlier run of the
        # shared Wine prefix leaves its state file behind (status calls it stale).
        eventually(
            lambda: state_file.exists() and INSTALLED.name in state_file.read_text(),
            "the running copy's state",
        )
        eventually(lambda: log_file.exists() and "listening" in log_file.read_text(), "its log")
        shown = exe("status", "--json")
        document = json.loads(shown.stdout)
        assert document["running"]["listening"] == f"127.0.0.1:{port}"
        assert document["running"]["log_file"] == log
        assert document["log"] == log
        # No Tailscale under Wine: the LocalAPI is unreachable, so not healthy.
        assert document["running"]["next_hop"]["health"] == "unreachable"
        assert shown.returncode == 1

        # Ended as Task Scheduler ends it: the bootloader killed outright.
        task.popen.send_signal(signal.SIGKILL)
        eventually(lambda: not state_file.exists(), "the relay stopping with its parent")
        assert "stopped" in log_file.read_text()
    finally:
        task.stop()

    removed = exe("uninstall")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert not INSTALLED.exists()
