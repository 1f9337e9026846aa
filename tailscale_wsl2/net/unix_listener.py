"""The WSL2 half's Unix socket, where the `tailscale` CLI expects its daemon.

Care is needed because its default path is the one a Linux `tailscaled` would
own:

- a socket file that nobody answers on is stale (left by a killed relay) and is
  replaced; one that a live process answers on is never taken over;
- the socket is bound under a temporary name, given its mode and group, then
  renamed into place, so no client ever sees it with the wrong permissions;
- on exit only our own socket is removed, never a file that another program
  has put there since (checked by device, inode and change time: filesystems
  such as tmpfs hand a freed inode number straight to the next file).

Unix only (CPython has no AF_UNIX on Windows); the Windows half never imports it.
"""

import errno
import os
import socket
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import trio

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.net.listeners import BACKLOG
from tailscale_wsl2.net.sockets import RawSocketListener, connect_socket

assert sys.platform != "win32"

__all__ = ["UnixSocketListener", "open_unix_listener"]

LIVENESS_TIMEOUT = 1.0


@dataclass
class UnixSocketListener:
    """A listening Unix socket plus what is needed to remove it safely."""

    listener: RawSocketListener
    path: Path
    identity: tuple[int, int, int]

    def remove_socket_file(self) -> None:
        """Unlink the socket file if it is still the one this process created."""
        try:
            if _identity(self.path) == self.identity:
                self.path.unlink()
        except FileNotFoundError:
            pass


def _identity(path: Path) -> tuple[int, int, int]:
    status = path.lstat()
    return status.st_dev, status.st_ino, status.st_ctime_ns


async def _someone_answers(path: Path) -> bool:
    """True when a live process accepts connections on the socket at `path`."""
    try:
        probe = await connect_socket(socket.AF_UNIX, str(path), timeout=LIVENESS_TIMEOUT)
    except ConnectionRefusedError:
        return False
    except trio.TooSlowError:
        return True  # a listener too busy to accept in time is alive too
    probe.close()
    return True


async def _clear_stale_socket(path: Path) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ActionableError(
            f"{path} exists and is not a socket",
            "remove it, or pick another path with --socket",
        )
    if await _someone_answers(path):
        raise ActionableError(
            f"another program already answers on {path} "
            "(a Linux tailscaled, or a second tailscale-wsl2)",
            "stop it (for tailscaled: sudo systemctl disable --now tailscaled), "
            "or pick another path with --socket",
        )
    path.unlink()


def _permission_error(path: Path, exc: OSError) -> ActionableError:
    return ActionableError(
        f"no permission to create {path} ({exc.strerror})",
        "run with sudo, or pick a path you own with --socket",
    )


def _bind_into_place(path: Path, mode: int, group: int | None) -> socket.socket:
    """Bind at a temporary name, set mode and group, then rename onto `path`."""
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        staging.unlink(missing_ok=True)
        sock.bind(str(staging))
        os.chmod(staging, mode)
        if group is not None:
            os.chown(staging, -1, group)
        os.rename(staging, path)
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        staging.unlink(missing_ok=True)
        raise
    return sock


async def open_unix_listener(path: Path, *, mode: int, group: int | None) -> UnixSocketListener:
    """Listen on `path`, replacing a stale socket but never a live one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        await _clear_stale_socket(path)
        sock = _bind_into_place(path, mode, group)
    except PermissionError as exc:
        raise _permission_error(path, exc) from exc
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG or "too long" in str(exc):
            raise ActionableError(
                f"socket path is too long for a Unix socket: {path}",
                "pick a shorter path with --socket",
            ) from exc
        raise ActionableError(
            f"cannot listen on {path}: {exc.strerror or exc}", "pick another path with --socket"
        ) from exc
    return UnixSocketListener(RawSocketListener(sock), path, _identity(path))
