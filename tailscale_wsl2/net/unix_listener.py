"""The WSL2 half's Unix socket, where the `tailscale` CLI expects its daemon.

The WSL2 half runs as root and its socket is the door to the Windows user's
Tailscale, so nobody else may get to shape it:

- its directory must be one that no other user can change: owned by root or by
  this user, and writable by nobody else unless it has the sticky bit (as /tmp
  does, where others cannot rename or remove what is ours); anything else is
  refused with one line;
- exactly one half owns a path, even when two start at the same moment: each
  takes an exclusive lock on a lock file beside the socket (`.NAME.lock`) and
  holds it for as long as it runs, so the second one stops with one line
  instead of both running; the lock file goes with the socket at exit;
- a socket file that nobody answers on is stale (left by a killed relay) and is
  replaced; one that a live process answers on is never taken over;
- the socket is made where no one can interfere: bound inside a new private
  directory (mode 0700) with its mode fixed at birth (the umask; a mode cannot
  be given to a socket's file by its descriptor), its group set without
  following a link (`lchown`), and only then linked into place, with a call
  that never replaces what is there; no `chmod` ever follows a path that
  someone else could have swapped;
- on exit only our own socket is removed, never a file that another program
  has put there since (checked by device, inode and change time: filesystems
  such as tmpfs hand a freed inode number straight to the next file).

Unix only (CPython has no AF_UNIX on Windows); the Windows half never imports it.
"""

import errno
import fcntl
import os
import socket
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import trio

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.facts import MAX_SOCKET_PATH_BYTES
from tailscale_wsl2.net.listeners import BACKLOG
from tailscale_wsl2.net.sockets import RawSocketListener, connect_socket

assert sys.platform != "win32"

__all__ = ["UnixSocketListener", "lock_path", "open_unix_listener"]

LIVENESS_TIMEOUT = 1.0
BOUND_NAME = "s"  # the socket's name inside the private directory: short, for sun_path's limit


@dataclass
class UnixSocketListener:
    """A listening Unix socket plus what is needed to remove it safely."""

    listener: RawSocketListener
    path: Path
    identity: tuple[int, int, int]
    lock_fd: int  # held for as long as the socket is ours

    def remove_socket_file(self) -> None:
        """Unlink the socket file if it is still the one this process created, then let
        go of the path (and remove the lock file, if it is still ours)."""
        try:
            if _identity(self.path) == self.identity:
                self.path.unlink()
        except FileNotFoundError:
            pass
        finally:
            self._let_go()

    def _let_go(self) -> None:
        if self.lock_fd != -1:
            _release_lock(self.path, self.lock_fd)
            self.lock_fd = -1


def lock_path(path: Path) -> Path:
    """The lock file that says which half owns the socket at `path`."""
    return path.with_name(f".{path.name}.lock")


def _release_lock(path: Path, lock_fd: int) -> None:
    """Remove the lock file if it is still the one `lock_fd` holds, and let go of it."""
    try:
        lock = lock_path(path)
        held, there = os.fstat(lock_fd), lock.lstat()
        if (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino):
            lock.unlink()
    except OSError:
        pass  # gone already, or replaced: not ours to remove
    finally:
        os.close(lock_fd)


def _identity(path: Path) -> tuple[int, int, int]:
    status = path.lstat()
    return status.st_dev, status.st_ino, status.st_ctime_ns


def _check_directory(directory: Path) -> None:
    """Refuse a directory in which another user could swap or remove our socket."""
    status = directory.stat()
    ours = {0, os.geteuid()}
    group_writable = status.st_mode & stat.S_IWGRP and status.st_gid not in {0, os.getegid()}
    writable_by_others = status.st_mode & stat.S_IWOTH or group_writable
    if status.st_uid in ours and not (writable_by_others and not status.st_mode & stat.S_ISVTX):
        return
    raise ActionableError(
        f"other users can change {directory} (mode {stat.S_IMODE(status.st_mode):04o}, "
        f"owner uid {status.st_uid}), so they could swap the socket there",
        "pick a path in a directory that only root or you can write to with --socket "
        "(the default /var/run/tailscale/tailscaled.sock is one)",
    )


def _take_lock(path: Path) -> int:
    """Lock the path for this process (the descriptor holds the lock), or say who has it."""
    lock = lock_path(path)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        _lock_or_name_the_holder(fd, lock, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _lock_or_name_the_holder(fd: int, lock: Path, path: Path) -> None:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise ActionableError(f"{lock} is not a regular file", f"remove {lock}")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        raise ActionableError(
            f"another tailscale-wsl2 already serves {path}"
            + (f" (pid {holder})" if holder.isdigit() else ""),
            "stop it first, or pick another path with --socket",
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


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


def _bind_privately(bound: Path, mode: int, group: int | None) -> socket.socket:
    """A socket listening at `bound` (in our private directory) with its mode and group."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # The file gets its mode when bind creates it: 0777 less the umask.
        previous_umask = os.umask(0o777 & ~mode)
        try:
            sock.bind(str(bound))
        finally:
            os.umask(previous_umask)
        if group is not None:
            os.chown(bound, -1, group, follow_symlinks=False)
        sock.listen(BACKLOG)  # listening before it has a public name: no refusal to see
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_into_place(path: Path, mode: int, group: int | None) -> socket.socket:
    """Bind in a private directory beside `path`, then link the socket to `path` (failing,
    never replacing, when something is there)."""
    private = Path(tempfile.mkdtemp(prefix=".tswsl-", dir=path.parent))
    bound = private / BOUND_NAME
    try:
        sock = _bind_privately(bound, mode, group)
        try:
            os.link(bound, path, follow_symlinks=False)
        except BaseException as exc:
            sock.close()
            if isinstance(exc, FileExistsError):
                raise ActionableError(
                    f"something appeared at {path} while the socket was being made",
                    "find out what made it, remove it, and start again",
                ) from exc
            raise
    finally:
        bound.unlink(missing_ok=True)
        private.rmdir()
    return sock


async def open_unix_listener(path: Path, *, mode: int, group: int | None) -> UnixSocketListener:
    """Listen on `path`, replacing a stale socket but never a live one, nor one that another
    half is about to make."""
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        path = path.parent.resolve() / path.name
        _check_length(path)
        _check_directory(path.parent)
        lock_fd = _take_lock(path)
    except PermissionError as exc:
        raise _permission_error(path, exc) from exc
    except OSError as exc:
        raise _cannot_listen(path, exc) from exc
    try:
        await _clear_stale_socket(path)
        sock = _bind_into_place(path, mode, group)
        identity = _identity(path)
    except BaseException as exc:
        _release_lock(path, lock_fd)
        if isinstance(exc, PermissionError):
            raise _permission_error(path, exc) from exc
        if isinstance(exc, OSError):
            raise _cannot_listen(path, exc) from exc
        raise
    return UnixSocketListener(RawSocketListener(sock), path, identity, lock_fd)


def _check_length(path: Path) -> None:
    """Refuse a path no client could connect to: the socket is bound under a short name and
    linked into place, where no bind would have stopped a long one."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), str(path))


def _cannot_listen(path: Path, exc: OSError) -> ActionableError:
    if exc.errno == errno.ENAMETOOLONG or "too long" in str(exc):
        return ActionableError(
            f"socket path is too long for a Unix socket: {path}",
            "pick a shorter path with --socket",
        )
    return ActionableError(
        f"cannot listen on {path}: {exc.strerror or exc}", "pick another path with --socket"
    )
