"""A one-file build's two processes: the program dies with the process that was started, and
leaves no extraction directory behind.

A PyInstaller one-file program is a bootloader that unpacks the bundle into a `_MEI...`
directory under the temporary directory and runs the real program as its child; when the child
exits, the bootloader removes the directory. Two things go wrong when the bootloader is killed
outright (`kill -9`, a service manager's last resort, Windows ending processes at logoff):
- the child runs on as an orphan, holding the socket or the port, and a restart then fails;
- nobody removes the extraction directory, and one more (about 16 MB) is left per kill.

So, in a one-file child only:
- it follows its parent: on Linux the kernel sends SIGTERM when the parent dies
  (`PR_SET_PDEATHSIG`), which the running half treats as a stop (drain, remove the socket); on
  Windows a thread waits on the parent's process handle and then raises the same stop
  (`watch_parent_on_windows`);
- it holds a lock on a marker file in its own extraction directory for as long as it runs, and
  at start removes the directories of earlier runs whose marker is no longer locked: only
  directories with our marker, never another program's and never a live one's;
- when it exits after its parent died, it removes its own directory (the parent cannot).
"""

import contextlib
import ctypes
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

__all__ = [
    "MARKER",
    "claim",
    "extraction_dir",
    "follow_parent",
    "onefile_lifecycle",
    "remove_dead_extraction_dirs",
    "try_lock",
]

# The marker a run of this program leaves in its extraction directory, locked while it runs.
MARKER = "tailscale-wsl2.lock"
# What PyInstaller names its one-file extraction directories.
PREFIX = "_MEI"
# linux/prctl.h
PR_SET_PDEATHSIG = 1


def extraction_dir() -> Path | None:
    """This process's one-file extraction directory, or None when it is not a one-file child
    (running from source, or a one-folder build, whose bundle is beside the executable)."""
    bundle = getattr(sys, "_MEIPASS", None)
    if not getattr(sys, "frozen", False) or bundle is None:
        return None
    here = Path(bundle)
    return here if here != Path(sys.executable).parent else None


def try_lock(handle: IO[bytes]) -> bool:
    """Take an exclusive lock on the open file without waiting; False when another holds it."""
    try:
        if sys.platform == "win32":
            import msvcrt  # noqa: PLC0415 (Windows only)

            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl  # noqa: PLC0415 (Unix only)

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def claim(directory: Path) -> IO[bytes]:
    """Mark `directory` as this live run's: the returned file stays open, and locked, until
    the process ends (the kernel releases the lock however it ends)."""
    handle = (directory / MARKER).open("a+b")
    try_lock(handle)
    return handle


def _is_dead_run(directory: Path) -> bool:
    marker = directory / MARKER
    try:
        handle = marker.open("r+b")
    except OSError:
        return False  # not ours (no marker), or not ours to touch
    with handle:
        return try_lock(handle)


def remove_dead_extraction_dirs(root: Path, own: Path, remove: Callable[[Path], None]) -> int:
    """Remove the extraction directories under `root` that earlier runs of this program left;
    how many. A directory counts only when it has our marker and nobody holds its lock."""
    removed = 0
    with contextlib.suppress(OSError):
        for candidate in root.iterdir():
            if candidate == own or not candidate.name.startswith(PREFIX):
                continue
            if candidate.is_dir() and not candidate.is_symlink() and _is_dead_run(candidate):
                remove(candidate)
                removed += 1
    return removed


def follow_parent(parent_pid: int, on_parent_gone: Callable[[], None]) -> None:
    """Have `on_parent_gone` run when the process that started this one dies."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:  # it died before the request took effect
            on_parent_gone()
    elif sys.platform == "win32":
        watch_parent_on_windows(parent_pid, on_parent_gone)


def watch_parent_on_windows(parent_pid: int, on_parent_gone: Callable[[], None]) -> None:
    """A daemon thread that waits on the parent's process handle, then calls `on_parent_gone`."""
    if sys.platform != "win32":
        return
    import threading  # noqa: PLC0415

    synchronize = 0x00100000
    infinite = 0xFFFFFFFF
    kernel32 = ctypes.windll.kernel32
    handle = kernel32.OpenProcess(synchronize, False, parent_pid)
    if not handle:
        return  # gone already, or not ours to watch: nothing to follow

    def wait() -> None:
        kernel32.WaitForSingleObject(handle, infinite)
        on_parent_gone()

    threading.Thread(target=wait, name="parent-watch", daemon=True).start()


def _stop_this_process() -> None:
    # The same stop a user's Ctrl+C or a service manager's SIGTERM gives: the running half
    # drains and removes its socket.
    if sys.platform == "win32":
        signal.raise_signal(signal.SIGINT)
    else:
        os.kill(os.getpid(), signal.SIGTERM)


@contextlib.contextmanager
def onefile_lifecycle() -> Iterator[None]:
    """Around the whole program: follow the parent, clean up dead runs, and our own directory
    when the parent cannot. Does nothing outside a one-file child."""
    own = extraction_dir()
    if own is None:
        yield
        return
    parent = os.getppid()
    marker = claim(own)
    remove_dead_extraction_dirs(own.parent, own, lambda path: shutil.rmtree(path, True))
    follow_parent(parent, _stop_this_process)
    try:
        yield
    finally:
        if os.getppid() != parent:  # the bootloader is gone: nobody else will remove it
            marker.close()
            shutil.rmtree(own, ignore_errors=True)
