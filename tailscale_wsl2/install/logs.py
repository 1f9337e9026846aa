"""`tailscale-wsl2 logs`: this side's log, from the journal or from the rotating log file.

A half run by systemd logs to the journal, which `journalctl` shows (run by absolute path,
its output going straight to the user). Otherwise the log is a file that rotates at a size
bound (paths.py): the last N lines may span the file and the newest older file, so both are
read. Following a file opens it anew for each look instead of keeping it open: on Windows a
file held open cannot be renamed, and rotation renames the log; a file that shrank or is
another file since the last look has rotated, and is read from its start.
"""

from collections.abc import Callable
from pathlib import Path

from .paths import LOG_BACKUPS, rotated_log_files
from .systemd import UNIT_NAME

__all__ = [
    "JOURNALCTL_CANDIDATES",
    "follow_log",
    "journal_argv",
    "last_lines",
]

JOURNALCTL_CANDIDATES = ("/usr/bin/journalctl", "/bin/journalctl")
FOLLOW_INTERVAL_SECONDS = 0.5


def journal_argv(journalctl: str, lines: int, follow: bool) -> list[str]:
    argv = [journalctl, "--unit", UNIT_NAME, "--lines", str(lines), "--no-pager"]
    return [*argv, "--follow"] if follow else argv


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def last_lines(path: Path, count: int, backups: int = LOG_BACKUPS) -> list[str]:
    """The last `count` lines of the log at `path`, the older files' included as needed."""
    lines: list[str] = []
    for name in rotated_log_files(str(path), backups):  # newest first
        older = _read(name).decode("utf-8", "replace").splitlines()
        lines = older + lines
        if len(lines) >= count:
            break
    return lines[-count:] if count > 0 else []


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino, status.st_size


def follow_log(
    path: Path,
    emit: Callable[[str], None],
    sleep: Callable[[float], None],
    keep_going: Callable[[], bool] = lambda: True,
) -> None:
    """Emit what is added to the log at `path` from now on, until `keep_going` says no."""
    seen = _identity(path)
    position = seen[2] if seen else 0
    while keep_going():
        sleep(FOLLOW_INTERVAL_SECONDS)
        now = _identity(path)
        if now is None:
            continue  # between a rotation's rename and the next write
        if seen is None or now[:2] != seen[:2] or now[2] < position:
            position = 0  # rotated: a new file
        seen = now
        if now[2] == position:
            continue
        with path.open("rb") as log:
            log.seek(position)
            added = log.read()
        # Only whole lines: a line being written is shown once it is complete.
        whole = added[: added.rfind(b"\n") + 1]
        position += len(whole)
        if whole:
            emit(whole.decode("utf-8", "replace"))
