"""The seams between the checks and the running system: their types and real implementations.

Checks never run a program, open a connection or ask the kernel directly; they call functions
handed to them in their context (a `RunCommand`, a `Connect`, ...). The real ones are here;
tests hand in canned answers, so every check runs on Linux against real-world samples, Windows
checks included.
"""

import socket
import struct
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from ..endpoints import Endpoint
from ..ipconfig import oem_codec
from ..side import read_text_if_present
from ..sockets import RawSocketStream

__all__ = [
    "COMMAND_TIMEOUT_SECONDS",
    "CommandResult",
    "Connect",
    "PeerProcess",
    "RunCommand",
    "peer_process",
    "run_command",
]

# Generous next to the network probes' two seconds: on a Windows host with hundreds of firewall
# rules, `netsh ... show rule name=all verbose` takes several seconds.
COMMAND_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    output: str  # stdout, then stderr


# None: the program could not be run at all (missing, or no answer in time).
RunCommand = Callable[[Sequence[str]], CommandResult | None]
Connect = Callable[[Endpoint], Awaitable[trio.abc.Stream]]


def _console_codec() -> str:
    # Windows' console tools print in the OEM code page, not the ANSI one Python assumes.
    if sys.platform != "win32":
        return "utf-8"
    import ctypes  # noqa: PLC0415 (Windows only)

    return oem_codec(ctypes.windll.kernel32.GetOEMCP())


def _no_console_window() -> int:
    if sys.platform != "win32":
        return 0
    return subprocess.CREATE_NO_WINDOW


def run_command(argv: Sequence[str]) -> CommandResult | None:
    """Run `argv` with a time limit and capture its output; None when it cannot be run."""
    try:
        completed = subprocess.run(
            list(argv),
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=COMMAND_TIMEOUT_SECONDS,
            check=False,
            creationflags=_no_console_window(),
        )
    except (OSError, subprocess.SubprocessError):
        return None
    codec = _console_codec()
    output = completed.stdout.decode(codec, "replace") + completed.stderr.decode(codec, "replace")
    return CommandResult(completed.returncode, output)


@dataclass(frozen=True)
class PeerProcess:
    """The process on the other end of a Unix socket: its pid and command line."""

    pid: int
    argv: tuple[str, ...]

    def __str__(self) -> str:
        # One line, however the arguments break (`python -c` code spans several).
        return f"{' '.join(' '.join(self.argv).split())[:100]} (pid {self.pid})"


def peer_process(stream: trio.abc.Stream) -> PeerProcess | None:
    """Who listens on the Unix socket `stream` is connected to (Linux: SO_PEERCRED holds the
    listener's pid, /proc/PID/cmdline its command line); None where that cannot be told."""
    if sys.platform != "linux" or not isinstance(stream, trio.SocketStream | RawSocketStream):
        return None
    credentials = struct.Struct("3i")  # struct ucred: pid, uid, gid
    raw = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, credentials.size)
    pid = credentials.unpack(raw)[0]
    cmdline = read_text_if_present(Path(f"/proc/{pid}/cmdline")) if pid > 0 else None
    if not cmdline:
        return None
    return PeerProcess(pid, tuple(cmdline.rstrip("\0").split("\0")))
