"""A copy of tailscale-wsl2 that is running now, as install sees it, and when it is in the way.

The running half reports itself in a state file (serve/state.py); `cli` reads it and hands
install this small value, since install does not depend on the running relay. A half the user
started by hand in a terminal holds the socket (WSL2) or the port (Windows), so the service
that install starts could not serve beside it and would restart forever: install stops before
changing anything and says which process it is and how to stop it. The installed copy itself
is not in the way: the service's restart, or the task's end-and-start, replaces it.
"""

from dataclasses import dataclass
from pathlib import PurePath, PureWindowsPath

from tailscale_wsl2.errors import ActionableError

__all__ = ["RunningCopy", "check_not_started_by_hand"]


@dataclass(frozen=True)
class RunningCopy:
    pid: int
    executable: str
    arguments: tuple[str, ...]


def _same_program(first: str, second: str, windows: bool) -> bool:
    if windows:
        return PureWindowsPath(first) == PureWindowsPath(second)  # compared without case
    return PurePath(first) == PurePath(second)


def check_not_started_by_hand(
    running: RunningCopy | None, installed_program: str, *, windows: bool
) -> None:
    """Refuse when a copy other than the installed program serves this side now."""
    if running is None or _same_program(running.executable, installed_program, windows):
        return
    stop = f"taskkill /PID {running.pid}" if windows else f"sudo kill {running.pid}"
    where = "its window" if windows else "its terminal"
    raise ActionableError(
        f"tailscale-wsl2 already runs here, started by hand (pid {running.pid}: "
        f"{running.executable} {' '.join(running.arguments)}), and the installed copy could "
        "not serve beside it",
        f"stop it (Ctrl+C in {where}, or `{stop}`), then run install again",
    )
