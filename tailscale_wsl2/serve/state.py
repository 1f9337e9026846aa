"""What a running half reports about itself, for `tailscale-wsl2 status`: a small JSON file.

A half started by systemd, by WSL's boot command or by a logon task has no terminal to show
its state on, and `status` runs in another process, often as another user. So the running half
writes one file, and keeps it current: when it starts, when where it listens changes (the
Windows half follows the WSL adapter), and when the health of its next hop changes as its own
connections find it (the WSL2 half's warm links, the Windows half's LocalAPI connections). It
removes the file when it stops. Writes are whole-file replacements (a temporary file renamed
over the old one), so a reader sees the old state or the new one, never half of either.

A killed half leaves its file behind, and its process id may later belong to another process,
so the file also records the process's start time as the kernel keeps it (Linux: field 22 of
/proc/PID/stat; Windows: the creation time from GetProcessTimes): `is_running` requires the
same process id *and* the same start time. Nothing here imports trio, so `status` starts fast.

Where the file is, per half (`state_path`):
- WSL2 as root: /run/tailscale-wsl2/ (a tmpfs, emptied at every boot; readable by every user);
- Linux as another user: $XDG_RUNTIME_DIR/tailscale-wsl2/;
- Windows: %LOCALAPPDATA%\\tailscale-wsl2\\ (beside the link key);
- anywhere: the directory in TAILSCALE_WSL2_STATE_DIR, when set (tests run both halves on one
  machine, each with its own).
The file is named after the half (`state-wsl.json`, `state-windows.json`).
"""

import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from tailscale_wsl2 import __version__
from tailscale_wsl2.facts import PROGRAM

__all__ = [
    "STATE_DIR_VARIABLE",
    "HalfName",
    "HopHealth",
    "RunState",
    "StateReporter",
    "initial_state",
    "is_running",
    "process_start_token",
    "read_state",
    "state_path",
    "state_paths_to_read",
    "write_state",
]

log = logging.getLogger(__name__)

STATE_DIR_VARIABLE = "TAILSCALE_WSL2_STATE_DIR"
WSL_RUN_DIR = Path("/run") / PROGRAM
SCHEMA = 1

HalfName = Literal["windows", "wsl"]
Health = Literal["unknown", "reachable", "unreachable"]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class HopHealth:
    """The next hop as the running half last found it, and since when."""

    health: Health = "unknown"
    detail: str = ""  # for "unreachable": the line a client gets in its 502
    since: str = field(default_factory=_now)


@dataclass(frozen=True)
class RunState:
    """What `status` shows of a running half."""

    half: HalfName
    pid: int
    process_start: str | None  # see process_start_token
    executable: str
    version: str
    started: str  # UTC, ISO 8601
    arguments: tuple[str, ...]  # the command line after the program's name
    listening: str | None  # None: not listening now (the Windows half waiting for WSL)
    relaying_to: str
    next_hop: HopHealth = field(default_factory=HopHealth)
    log_file: str | None = None
    schema: int = SCHEMA

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "RunState":
        """Parse a state file; ValueError when it is not one this version can read."""
        try:
            fields: dict[str, Any] = json.loads(text)
            if fields.get("schema") != SCHEMA:
                raise ValueError(f"unknown schema {fields.get('schema')!r}")
            fields["arguments"] = tuple(fields["arguments"])
            fields["next_hop"] = HopHealth(**fields["next_hop"])
            return cls(**fields)
        except (TypeError, KeyError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a state file: {exc}") from None


def _state_dir(platform: str, environ: Mapping[str, str], euid: int | None) -> Path | None:
    if environ.get(STATE_DIR_VARIABLE):
        return Path(environ[STATE_DIR_VARIABLE])
    if platform == "win32":
        local = environ.get("LOCALAPPDATA")
        return Path(local) / PROGRAM if local else None
    if euid == 0:
        return WSL_RUN_DIR
    runtime = environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) / PROGRAM if runtime else None


def initial_state(
    half: HalfName, arguments: tuple[str, ...] = (), log_file: str | None = None
) -> RunState:
    """This process's state as it starts: where it listens and relays to are filled in later."""
    pid = os.getpid()
    return RunState(
        half=half,
        pid=pid,
        process_start=process_start_token(pid),
        executable=sys.executable,
        version=__version__,
        started=_now(),
        arguments=arguments,
        listening=None,
        relaying_to="",
        log_file=log_file,
    )


def state_path(
    half: HalfName, *, platform: str, environ: Mapping[str, str], euid: int | None
) -> Path | None:
    """Where a half running as `euid` writes its state; None when there is no such place."""
    directory = _state_dir(platform, environ, euid)
    return directory / f"state-{half}.json" if directory else None


def state_paths_to_read(
    half: HalfName, *, platform: str, environ: Mapping[str, str], euid: int | None
) -> list[Path]:
    """Where `status` looks: this user's place first, then root's (the installed service)."""
    paths = [state_path(half, platform=platform, environ=environ, euid=euid)]
    if platform != "win32" and euid != 0 and not environ.get(STATE_DIR_VARIABLE):
        paths.append(state_path(half, platform=platform, environ=environ, euid=0))
    return [path for path in paths if path is not None]


def read_state(path: Path) -> RunState | None:
    """The state at `path`; None when there is no file. ValueError when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    return RunState.from_json(text)


def write_state(path: Path, state: RunState) -> None:
    """Replace the file at `path` with `state`, whole (OSError when that cannot be done)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    descriptor, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(state.to_json())
        os.chmod(staging, 0o644)  # status runs as any user; the file holds no secret
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


# --- is the process that wrote it still that process? ------------------------------------------


def _linux_start_ticks(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The name in parentheses may hold spaces; the fields after it are fixed: state is the
    # third field, the start time (clock ticks after boot) the 22nd.
    after_name = stat.rpartition(")")[2].split()
    if len(after_name) < 20 or after_name[0] in ("Z", "X"):
        return None  # a zombie has exited already
    return f"linux:{after_name[19]}"


def _windows_creation_time(pid: int) -> str | None:
    if sys.platform != "win32":
        return None
    import ctypes  # noqa: PLC0415 (Windows only)
    from ctypes import wintypes  # noqa: PLC0415

    query_limited_information = 0x1000
    still_active = 259
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenProcess.restype = wintypes.HANDLE
    handle = kernel32.OpenProcess(query_limited_information, False, pid)
    if not handle:
        return None
    try:
        code = wintypes.DWORD()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return None
        if code.value != still_active:
            return None
        times = [wintypes.FILETIME() for _ in range(4)]
        if not kernel32.GetProcessTimes(handle, *(ctypes.byref(t) for t in times)):
            return None
        created = times[0]
        return f"windows:{(created.dwHighDateTime << 32) | created.dwLowDateTime}"
    finally:
        kernel32.CloseHandle(handle)


def process_start_token(pid: int) -> str | None:
    """When process `pid` started, as the kernel keeps it; None when it is not running (or
    this platform cannot tell)."""
    if sys.platform == "win32":
        return _windows_creation_time(pid)
    return _linux_start_ticks(pid) if sys.platform == "linux" else None


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, but it exists
    return True


def is_running(
    state: RunState, start_token_of: Callable[[int], str | None] = process_start_token
) -> bool:
    """Whether the process that wrote `state` still runs (not merely a process with its id)."""
    if state.process_start is None:
        return sys.platform != "win32" and _pid_exists(state.pid)
    return start_token_of(state.pid) == state.process_start


# --- the running half's side ------------------------------------------------------------------


class StateReporter:
    """The running half's state file: written at start, on each change, removed at stop.

    A state that cannot be written (a read-only /run, a full disk) costs the half nothing but
    its `status`: the failure is logged once, and the next change tries again.
    """

    def __init__(
        self,
        path: Path | None,
        state: RunState,
        write: Callable[[Path, RunState], None] = write_state,
    ) -> None:
        self.path = path
        self.state = state
        self._write = write
        self._said_failure = False

    def update(self, **changes: Any) -> None:
        new = replace(self.state, **changes)
        if new != self.state:
            self.state = new
            self.save()

    def save(self) -> None:
        if self.path is None:
            return
        try:
            self._write(self.path, self.state)
        except OSError as exc:
            if not self._said_failure:
                log.warning("cannot write %s (%s): `status` will not see this half", self.path, exc)
                self._said_failure = True

    def next_hop_reachable(self) -> None:
        if self.state.next_hop.health != "reachable":
            self.update(next_hop=HopHealth("reachable"))

    def next_hop_unreachable(self, detail: str) -> None:
        hop = self.state.next_hop
        if hop.health != "unreachable" or hop.detail != detail:
            self.update(next_hop=HopHealth("unreachable", detail))

    def remove(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)
