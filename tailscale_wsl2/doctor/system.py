"""The doctor's own seams to the running system (running programs is `tailscale_wsl2.system`).

Checks never run a program, open a connection or ask the kernel directly; they call functions
handed to them in their context (a `RunCommand`, a `Connect`, ...). The real ones are here;
tests hand in canned answers, so every check runs on Linux against real-world samples, Windows
checks included.
"""

import os
import socket
import struct
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from tailscale_wsl2.net.endpoints import Endpoint
from tailscale_wsl2.net.sockets import RawSocketStream
from tailscale_wsl2.system import read_text_if_present

__all__ = ["Connect", "PeerProcess", "may_create_socket", "peer_process"]

Connect = Callable[[Endpoint], Awaitable[trio.abc.Stream]]


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


def may_create_socket(path: Path) -> bool:
    """Whether this user could create `path` (and the folders above it that are missing):
    where not, a fix that starts the WSL2 half needs sudo."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return os.access(folder, os.W_OK | os.X_OK)
