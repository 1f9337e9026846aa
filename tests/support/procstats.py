"""What a running half costs the system, read from /proc (Linux only).

The frozen binary is a PyInstaller one-file bootloader: the process the test
starts unpacks the program and runs it as its only child, which is the process
that holds the relay's sockets and memory. `program_pid` finds that process.
"""

import os
import time
from collections.abc import Callable
from pathlib import Path

import trio

__all__ = ["children", "fd_count", "process_state", "program_pid", "rss_bytes", "settle"]

PROC = Path("/proc")


def children(pid: int) -> list[int]:
    """The process's children, of all its threads; none once it is gone."""
    found: list[int] = []
    try:
        tasks = list((PROC / str(pid) / "task").iterdir())
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:
            pass  # the thread ended while we looked
    return found


def process_state(pid: int) -> str:
    """The process's state letter (Z: exited, not yet reaped), or "gone"."""
    try:
        return (PROC / str(pid) / "stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return "gone"


def _exe(pid: int) -> str:
    try:
        return os.readlink(PROC / str(pid) / "exe")
    except OSError:
        return ""


def program_pid(pid: int, frozen_binary: Path, timeout: float = 15.0) -> int:
    """The process running the program: `pid` itself, or the bootloader's child."""
    if _exe(pid) != str(frozen_binary.resolve()):
        return pid
    deadline = time.monotonic() + timeout
    while True:
        same_program = [child for child in children(pid) if _exe(child) == _exe(pid)]
        if same_program:
            [child] = same_program
            return child
        if time.monotonic() > deadline:
            raise RuntimeError(f"the bootloader {pid} started no program in {timeout}s")
        time.sleep(0.02)


def fd_count(pid: int) -> int:
    """How many file descriptors the process has open."""
    return len(os.listdir(PROC / str(pid) / "fd"))


def rss_bytes(pid: int) -> int:
    """The process's resident set size (VmRSS)."""
    for line in (PROC / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def settle(measure: Callable[[], int], done: Callable[[int], bool], timeout: float) -> int:
    """Measure until `done` holds or `timeout` passes; the last measurement either way."""
    deadline = time.monotonic() + timeout
    while not done(value := measure()) and time.monotonic() < deadline:
        await trio.sleep(0.05)
    return value
