"""The chain across two operating systems on one Linux machine, for the Wine end-to-end tests.

    curl --unix-socket  ->  WSL2 half (Linux, native)  --TCP 127.0.0.1-->  Windows half (Wine)
        --named pipe-->  LocalAPI stand-in (a Windows Python under Wine)

Wine shares the Linux loopback network, so the two halves meet on 127.0.0.1 exactly as they do
over WSL2's mirrored networking; the Windows half reaches its upstream through the Win32 named
pipe API, as it does with Tailscale on Windows. One key file serves both halves: the Windows
half sees it as `Z:\\...` (Wine's drive Z: is the Linux root) and creates it, the WSL2 half reads
it by its Linux path.

Wine processes are run through tools/winrun with stdout and stderr on a pipe, so winrun execs
Wine and the process id we hold is the Windows program's own (Python under Wine dies at
start-up when a standard stream is a regular file, which rules out a log file). Each runs in a
session of its own; stopping one signals it, then kills whatever is left of its process group
(a PyInstaller one-file .exe runs the program in a child process). The persistent wineserver and
Wine's services are never in that group: tools/wine-env starts them detached, beforehand.
"""

import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.chain import (
    Process,
    connectable,
    module_program,
    start_process,
    wait_for_process,
    wait_until,
)
from tests.support.ci import in_ci
from tests.support.sockets import free_tcp_port

WINE_ENV = ROOT / "tools" / "wine-env"
WINRUN = ROOT / "tools" / "winrun"
WINPY = ROOT / "tools" / "winpy"
# tools/wine-pyinstaller test: the frozen Windows half with the test-only Wine trio patch.
WINE_TEST_EXE = ROOT / "build" / "wine-dist" / "tailscale-wsl2-test-hooks.exe"
# tools/wine-env's exit status for "Wine is missing and cannot be installed here".
EXIT_NO_WINE = 3
# A Windows Python under Wine starts in about a second when warm; the first start after the
# wineserver came up, or a one-file .exe unpacking itself, takes longer.
WINE_START_TIMEOUT = 60.0
STANDIN_READY = "listening on "

# The program that runs the Windows half: the package in the Windows Python (patched for Wine
# by tests/in_wine/wine_main.py), or the test build of the .exe.
WINDOWS_MODULE_PROGRAM = [str(WINPY), "-m", "tests.in_wine.wine_main", "tailscale_wsl2"]
WINDOWS_EXE_PROGRAM = [str(WINRUN), str(WINE_TEST_EXE)]


def windows_path(path: Path) -> str:
    """The Windows name Wine gives a Linux path (drive Z: is /)."""
    return "Z:" + str(path.resolve()).replace("/", "\\")


def unique_pipe_name(purpose: str) -> str:
    return rf"\\.\pipe\tailscale-wsl2-e2e-{purpose}-{uuid.uuid4().hex}"


def _process_group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # Fields after the command name, which is in parentheses and may contain spaces.
        fields = stat.rpartition(")")[2].split()
        if int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


@dataclass
class WineProcess:
    """A Windows program under Wine, its merged output copied to a log file by a thread."""

    popen: subprocess.Popen[bytes]
    log: Path
    _copier: threading.Thread

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop it and every process it started; only its own process group is touched."""
        self.signal_stop()
        self.wait_stopped(timeout)

    def signal_stop(self) -> None:
        # The group id is the leader's pid (start_new_session); it outlives the leader. Wine
        # takes a second or two to end a Windows process on SIGTERM, so the whole group (a
        # one-file .exe is two processes) is signalled at once rather than one by one.
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)

    def wait_stopped(self, timeout: float = 10.0) -> None:
        """Wait for the group to end after `signal_stop`; SIGKILL what is left at `timeout`."""
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        deadline = time.monotonic() + timeout
        while members := _process_group_members(self.popen.pid):
            if time.monotonic() > deadline:
                for pid in members:
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        self._copier.join(timeout)
        assert self.popen.stdout is not None
        self.popen.stdout.close()


# A cold tools/wine-env installs Wine and downloads CPython and ~30 wheels.
WINE_SETUP_TIMEOUT = 1800.0


def prepare_wine(purpose: str) -> float:
    """Run tools/wine-env; return how long it took. No Wine: fail in CI, else skip."""
    started = time.monotonic()
    setup = subprocess.run(
        [str(WINE_ENV)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=WINE_SETUP_TIMEOUT,
        check=False,
    )
    if setup.returncode == EXIT_NO_WINE:
        reason = f"Wine is unavailable: {setup.stderr.strip()}"
        if in_ci():
            pytest.fail(f"{reason} (CI must {purpose} under Wine)")
        pytest.skip(reason)
    assert setup.returncode == 0, f"tools/wine-env failed:\n{setup.stdout}{setup.stderr}"
    return time.monotonic() - started


def start_wine_process(argv: Sequence[str], log: Path) -> WineProcess:
    popen = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        start_new_session=True,
    )
    assert popen.stdout is not None
    source = popen.stdout

    def copy() -> None:
        with log.open("wb") as sink:
            for line in source:
                sink.write(line)
                sink.flush()

    log.touch()
    copier = threading.Thread(target=copy, name=f"log {log.name}", daemon=True)
    copier.start()
    return WineProcess(popen, log, copier)


@dataclass
class WineChain:
    """The chain of this module's docstring: `start_all` (or `start_*`), then `stop_all`."""

    windows_program: list[str]
    workdir: Path
    pipe: str = field(default_factory=lambda: unique_pipe_name("localapi"))
    port: int = field(default_factory=free_tcp_port)
    wine_processes: dict[str, WineProcess] = field(default_factory=dict)
    linux_processes: dict[str, Process] = field(default_factory=dict)

    @property
    def socket(self) -> Path:
        return self.workdir / "tailscaled.sock"

    @property
    def key_file(self) -> Path:
        return self.workdir / "link.key"

    def start_localapi(self, *, wait: bool = True) -> WineProcess:
        argv = [str(WINPY), "-m", "tests.in_wine.localapi_pipe_standin", self.pipe]
        process = start_wine_process(argv, self.workdir / "localapi.log")
        self.wine_processes["localapi"] = process
        if wait:
            self.wait_for_localapi()
        return process

    def wait_for_localapi(self) -> None:
        process = self.wine_processes["localapi"]
        wait_until(
            lambda: STANDIN_READY in process.output(),
            lambda: process.popen.poll() is not None,
            process.output,
            "the named-pipe LocalAPI stand-in",
            WINE_START_TIMEOUT,
        )

    def start_windows_half(self, *, wait: bool = True) -> WineProcess:
        argv = [
            *self.windows_program,
            "up",
            "--side",
            "windows",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--upstream",
            f"npipe:{self.pipe}",
            "--key-file",
            windows_path(self.key_file),
        ]
        process = start_wine_process(argv, self.workdir / "windows.log")
        self.wine_processes["windows"] = process
        if wait:
            self.wait_for_windows_half()
        return process

    def wait_for_windows_half(self) -> None:
        process = self.wine_processes["windows"]
        wait_until(
            lambda: connectable(socket.AF_INET, ("127.0.0.1", self.port)),
            lambda: process.popen.poll() is not None,
            process.output,
            "the Windows half under Wine",
            WINE_START_TIMEOUT,
        )

    def start_all(self) -> None:
        """The whole chain; both Wine processes start at once (each takes a second or more)."""
        self.start_localapi(wait=False)
        self.start_windows_half(wait=False)
        self.wait_for_localapi()
        self.wait_for_windows_half()
        self.start_wsl_half()

    def start_wsl_half(self) -> Process:
        argv = [
            *module_program(),
            "up",
            "--side",
            "wsl",
            "--host-ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--socket",
            str(self.socket),
            "--key-file",
            str(self.key_file),
        ]
        process = start_process(argv, self.workdir / "wsl.log")
        self.linux_processes["wsl"] = process
        wait_for_process(
            lambda: connectable(socket.AF_UNIX, str(self.socket)), process, "the WSL2 half"
        )
        return process

    def logs(self) -> str:
        processes: list[WineProcess | Process] = [
            *self.wine_processes.values(),
            *self.linux_processes.values(),
        ]
        return "\n".join(f"--- {p.log.name}\n{p.output()}" for p in processes)

    def stop_all(self) -> None:
        for linux in self.linux_processes.values():
            with suppress(subprocess.TimeoutExpired):
                linux.stop()
        # Signalled together, waited for together: each takes Wine a second or two.
        for wine in self.wine_processes.values():
            wine.signal_stop()
        for wine in self.wine_processes.values():
            wine.wait_stopped()
        self.linux_processes.clear()
        self.wine_processes.clear()
