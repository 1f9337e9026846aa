"""The loopback chain: LocalAPI stand-in <- Windows half <- WSL2 half <- client.

Both halves run as real subprocesses of the program under test (the package
run by this interpreter, or the frozen binary), forced to a side with `--side`
so the whole chain runs on Linux.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import ROOT
from tests.support.sockets import free_tcp_port

FROZEN_BINARY = ROOT / "dist" / "tailscale-wsl2"
START_TIMEOUT = 15.0


def module_program() -> list[str]:
    return [sys.executable, "-m", "tailscale_wsl2"]


def connectable(family: int, address: str | tuple[str, int]) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(address)
        except OSError:
            return False
        return True


@dataclass
class Process:
    """A started subprocess whose output goes to a log file for diagnosis."""

    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise


def start_process(argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> Process:
    """`argv` started in the project's root; `env` added to this process's environment."""
    environ = {**os.environ, **(env or {})}
    with log.open("wb") as out:
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=environ)
    return Process(popen, log)


def wait_until(
    ready: Callable[[], bool],
    exited: Callable[[], bool],
    output: Callable[[], str],
    what: str,
    timeout: float = START_TIMEOUT,
) -> None:
    """Wait for `ready`; fail with the process's output when it exits or times out first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if exited():
            raise RuntimeError(f"{what} exited early:\n{output()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout}s:\n{output()}")
        time.sleep(0.02)


def wait_for_process(ready: Callable[[], bool], process: Process, what: str) -> None:
    wait_until(ready, lambda: process.popen.poll() is not None, process.output, what)


@dataclass
class Chain:
    program: list[str]
    workdir: Path
    port: int = field(default_factory=free_tcp_port)
    processes: dict[str, Process] = field(default_factory=dict)

    @property
    def localapi_socket(self) -> Path:
        return self.workdir / "localapi.sock"

    @property
    def socket(self) -> Path:
        return self.workdir / "tailscaled.sock"

    @property
    def key_file(self) -> Path:
        return self.workdir / "link.key"

    def start_localapi(self) -> Process:
        argv = [
            sys.executable,
            "-m",
            "tests.support.localapi_standin",
            f"unix:{self.localapi_socket}",
        ]
        process = start_process(argv, self.workdir / "localapi.log")
        wait_for_process(
            lambda: connectable(socket.AF_UNIX, str(self.localapi_socket)),
            process,
            "the LocalAPI stand-in",
        )
        self.processes["localapi"] = process
        return process

    def _up_argv(self, side: str, *options: str) -> list[str]:
        common = ["--port", str(self.port), "--key-file", str(self.key_file)]
        return [*self.program, "up", "--side", side, *common, *options]

    def windows_half_argv(self, *extra: str) -> list[str]:
        upstream = f"unix:{self.localapi_socket}"
        return self._up_argv("windows", "--listen", "127.0.0.1", "--upstream", upstream, *extra)

    def start_windows_half(self, *extra: str, env: Mapping[str, str] | None = None) -> Process:
        process = start_process(self.windows_half_argv(*extra), self.workdir / "windows.log", env)
        wait_for_process(
            lambda: connectable(socket.AF_INET, ("127.0.0.1", self.port)),
            process,
            "the Windows half",
        )
        self.processes["windows"] = process
        return process

    def wsl_half_argv(self, *extra: str) -> list[str]:
        return self._up_argv("wsl", "--host-ip", "127.0.0.1", "--socket", str(self.socket), *extra)

    def start_wsl_half(self, *extra: str, env: Mapping[str, str] | None = None) -> Process:
        process = start_process(self.wsl_half_argv(*extra), self.workdir / "wsl.log", env)
        wait_for_process(
            lambda: connectable(socket.AF_UNIX, str(self.socket)), process, "the WSL2 half"
        )
        self.processes["wsl"] = process
        return process

    def stop(self, name: str) -> int:
        return self.processes.pop(name).stop()

    def stop_all(self) -> None:
        for name in list(self.processes):
            with suppress(subprocess.TimeoutExpired):
                self.stop(name)


@contextmanager
def running_chain(program: list[str], workdir: Path) -> Iterator[Chain]:
    chain = Chain(program, workdir)
    try:
        chain.start_localapi()
        chain.start_windows_half()
        chain.start_wsl_half()
        yield chain
    finally:
        chain.stop_all()
