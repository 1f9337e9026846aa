"""A one-file build's two processes: the program dies with the process that was started, and
extraction directories do not pile up.

A PyInstaller one-file program is a bootloader that unpacks the bundle into a `_MEI...`
directory in the temporary directory and runs the real program there as its child; when the
child exits, the bootloader removes the directory. When the bootloader is killed outright
(`kill -9`, a service manager's last resort, Task Manager) the child runs on as an orphan
holding the socket or the port, and nobody removes the directory. So, in a one-file child only:

- It follows its bootloader. Linux: the kernel sends SIGTERM when the bootloader dies
  (`PR_SET_PDEATHSIG`), which the running half treats as a stop (drain, remove the socket).
  Windows: the same stop, asked by a thread waiting on the bootloader, and an exit after a
  grace for a program too stuck to stop (`_windows_parent.py`). A bootloader already gone when
  the child asks (killed during start-up) ends the child at once.
- It writes a marker in its own directory naming both processes (pid and start time, so a
  reused pid is no match). At start it removes the directories of earlier runs only when both
  processes its marker names are gone. Never a live run's: while its bootloader lives, the
  directory is the bootloader's to remove, even after the child has exited (the lock on a
  marker that an earlier version used was released at the child's exit, and a run starting
  then removed the directory under its bootloader's feet). Never one without a marker: it may
  be another program's, or a run still starting.
- When its bootloader is gone, it removes its own directory as it exits (nobody else will).
"""

import contextlib
import ctypes
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "MARKER",
    "PidSpace",
    "ProcessId",
    "ProcessStart",
    "Run",
    "claim",
    "extraction_dir",
    "is_bootloader_gone",
    "is_dead_run",
    "linux_process_start",
    "onefile_lifecycle",
    "parse_marker",
    "parse_stat_start",
    "remove_dead_extraction_dirs",
    "this_pid_space",
    "windows_process_start",
]

# The marker a run of this program writes in its extraction directory.
MARKER = "tailscale-wsl2.run"
# What PyInstaller names its one-file extraction directories.
PREFIX = "_MEI"
PROC = Path("/proc")
# linux/prctl.h
PR_SET_PDEATHSIG = 1
# The exit status of a program ended by SIGTERM, for a child whose bootloader died first.
EXIT_PARENT_GONE = 128 + signal.SIGTERM
# Windows: how long a program whose bootloader has ended may take to stop before it is ended
# (the relay gives open connections 2 s).
STOP_GRACE = 10.0

# The start time of a running process (ticks since boot on Linux, a FILETIME on Windows), or
# None when there is none: gone, or exited and waiting to be reaped (it will run no more code).
ProcessStart = Callable[[int], int | None]


@dataclass(frozen=True)
class ProcessId:
    """A process, told apart from a later one given the same pid by its start time."""

    pid: int
    start: int

    def is_running(self, process_start: ProcessStart) -> bool:
        return process_start(self.pid) == self.start


@dataclass(frozen=True)
class PidSpace:
    """Where pids mean something: this boot of the machine (Linux's boot id) and this pid
    namespace. Empty on Windows, whose process creation times tell boots apart by themselves."""

    boot: str = ""
    namespace: str = ""


@dataclass(frozen=True)
class Run:
    """One run of the one-file program: its two processes, and where their pids were given."""

    bootloader: ProcessId
    program: ProcessId
    space: PidSpace

    def text(self) -> str:
        numbers = (self.bootloader.pid, self.bootloader.start, self.program.pid, self.program.start)
        words = [*map(str, numbers)]
        if self.space != PidSpace():
            words += [self.space.boot, self.space.namespace]
        return " ".join(words) + "\n"


# Where pids mean something when that cannot be read: no run is judged dead from there.
UNKNOWN_SPACE = PidSpace("unknown", "unknown")


def parse_marker(text: str) -> Run | None:
    """The run a marker names, or None when it is not one of ours."""
    words = text.split()
    if len(words) not in (4, 6) or not all(word.isdigit() for word in words[:4]):
        return None
    boot_pid, boot_start, pid, start = map(int, words[:4])
    space = PidSpace(*words[4:])
    return Run(ProcessId(boot_pid, boot_start), ProcessId(pid, start), space)


def parse_stat_start(stat: str) -> int | None:
    """A running process's start time from its /proc/<pid>/stat line; None for a zombie."""
    # The command name, in parentheses, may hold spaces and parentheses: split after the last.
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 20 or fields[0] in ("Z", "X", "x"):
        return None
    return int(fields[19])  # field 22 of the line; the 3rd is the first after the name


def linux_process_start(pid: int, proc: Path = PROC) -> int | None:
    try:
        return parse_stat_start((proc / str(pid) / "stat").read_text())
    except (OSError, ValueError):
        return None


def windows_process_start(pid: int) -> int | None:
    if sys.platform != "win32":
        return None
    from tailscale_wsl2.tuning._windows_parent import creation_time  # noqa: PLC0415

    return creation_time(pid)


def _process_start() -> ProcessStart:
    return windows_process_start if sys.platform == "win32" else linux_process_start


def this_pid_space(proc: Path = PROC) -> PidSpace:
    if sys.platform == "win32":
        return PidSpace()
    try:
        boot = (proc / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
        return PidSpace(boot, os.readlink(proc / "self" / "ns" / "pid"))
    except OSError:
        return UNKNOWN_SPACE


def extraction_dir() -> Path | None:
    """This process's one-file extraction directory, or None when it is not a one-file child
    (running from source, or a one-folder build, whose bundle is beside the executable)."""
    bundle = getattr(sys, "_MEIPASS", None)
    if not getattr(sys, "frozen", False) or bundle is None:
        return None
    here = Path(bundle)
    return here if here != Path(sys.executable).parent else None


def claim(directory: Path, run: Run) -> None:
    """Mark `directory` as this run's. Written whole under another name, then renamed: a run
    starting at the same time reads the whole marker or none."""
    partial = directory / f".{MARKER}.{os.getpid()}"
    partial.write_text(run.text())
    partial.replace(directory / MARKER)


def is_dead_run(directory: Path, process_start: ProcessStart, space: PidSpace) -> bool:
    """Whether `directory` is left by a run of this program of which nothing runs any more."""
    try:
        run = parse_marker((directory / MARKER).read_text())
    except (OSError, UnicodeDecodeError):
        return False  # no marker: another program's, or a run still starting
    if run is None or UNKNOWN_SPACE in (run.space, space):
        return False
    if run.space.boot != space.boot:
        return True  # the machine has restarted since: every process of that run is gone
    if run.space.namespace != space.namespace:
        return False  # its pids are another namespace's: they cannot be looked up from here
    return not run.bootloader.is_running(process_start) and not run.program.is_running(
        process_start
    )


def _this_user() -> int | None:
    if sys.platform == "win32":
        return None  # the temporary directory is the user's own
    return os.geteuid()


def remove_dead_extraction_dirs(
    root: Path,
    is_dead: Callable[[Path], bool],
    remove: Callable[[Path], None],
    own_user: int | None = None,
) -> list[Path]:
    """Remove the extraction directories under `root` that dead runs of this program left, and
    only those: the real directories (no symbolic link) of `own_user` (default: this user),
    with a marker of a dead run."""
    removed: list[Path] = []
    own_user = _this_user() if own_user is None else own_user
    with contextlib.suppress(OSError):
        for candidate in sorted(root.iterdir()):
            if not candidate.name.startswith(PREFIX):
                continue
            with contextlib.suppress(OSError):
                status = candidate.lstat()
                if not candidate.is_dir() or candidate.is_symlink():
                    continue
                if own_user is not None and status.st_uid != own_user:
                    continue
                if is_dead(candidate):
                    remove(candidate)
                    removed.append(candidate)
    return removed


def is_bootloader_gone(bootloader: int, proc: Path = PROC) -> bool:
    """Linux: whether the process that started this one has died. The bootloader runs the same
    executable file as this process; whoever adopts an orphan (init, a subreaper) does not."""
    try:
        ours = os.stat(proc / "self" / "exe")
    except OSError:
        return False  # cannot tell: run on
    try:
        theirs = os.stat(proc / str(bootloader) / "exe")
    except OSError:
        return True  # gone, or another user's process: not the bootloader either way
    return (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino)


def _follow_bootloader_on_linux(bootloader: int) -> bool:
    """Ask for SIGTERM when the bootloader dies; False when it is already gone."""
    libc = ctypes.CDLL(None, use_errno=True)
    # First the request, then the check: a death between the two still sends the signal.
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    return not is_bootloader_gone(bootloader)


def _follow_bootloader_on_windows(bootloader: int) -> bool:
    """A stop when the bootloader ends, then, if still running, the end; False when it has
    ended already."""
    if sys.platform != "win32":
        return False
    from tailscale_wsl2.tuning._windows_parent import follow_process  # noqa: PLC0415

    # The stop Ctrl+C gives: the running half drains and removes its state.
    return follow_process(bootloader, lambda: signal.raise_signal(signal.SIGINT), STOP_GRACE)


@contextlib.contextmanager
def onefile_lifecycle() -> Iterator[None]:
    """Around the whole program: follow the bootloader, clean up after dead runs, and remove
    our own directory when the bootloader cannot. Does nothing outside a one-file child."""
    own = extraction_dir()
    if own is None:
        yield
        return
    process_start = _process_start()
    own_start = process_start(os.getpid())
    if own_start is None:  # no /proc: no process can be judged, so nothing is removed
        yield
        return
    bootloader_pid = os.getppid()
    # Read before the check below, which then proves it is the bootloader's (0: gone already).
    bootloader = ProcessId(bootloader_pid, process_start(bootloader_pid) or 0)
    space = this_pid_space()
    program = ProcessId(os.getpid(), own_start)
    # Marked before following: the parent-death signal may end this process before it can
    # handle it, and a marked directory is one that a later start can tell is dead.
    with contextlib.suppress(OSError):  # a full disk: unmarked, the directory is never removed
        claim(own, Run(bootloader, program, space))
    if sys.platform == "win32":
        following = _follow_bootloader_on_windows(bootloader_pid)
    else:
        following = _follow_bootloader_on_linux(bootloader_pid)
    if not following:
        # Killed while this process was starting: end as the signal would have ended us.
        shutil.rmtree(own, ignore_errors=True)
        raise SystemExit(EXIT_PARENT_GONE)
    remove_dead_extraction_dirs(
        own.parent,
        lambda directory: is_dead_run(directory, process_start, space),
        lambda directory: shutil.rmtree(directory, ignore_errors=True),
    )
    try:
        yield
    finally:
        if not bootloader.is_running(process_start):  # nobody else will remove it
            shutil.rmtree(own, ignore_errors=True)
