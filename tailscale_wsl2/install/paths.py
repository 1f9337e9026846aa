"""Where install puts things, from the environment it is given, and the log file's rotation.

Windows: per user, with no elevation needed, under %LOCALAPPDATA% (the program in
`Programs\\tailscale-wsl2`, where per-user installers put programs, its logs in
`tailscale-wsl2\\logs` next to the link key). WSL2: the usual places for a locally installed
program and an administrator's unit, and a log file for the boot-command path, which has no
journal. A log file nobody reads must not grow without end, hence `rotating_log_handler`.
"""

import logging
import logging.handlers
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.system import environ_value, find_first

__all__ = [
    "LOG_BACKUPS",
    "LOG_MAX_BYTES",
    "SYSTEMCTL_CANDIDATES",
    "WSL_BINARY",
    "WSL_LOG",
    "WSL_UNIT",
    "WindowsPaths",
    "environ_value",
    "find_first",
    "rotated_log_files",
    "rotating_log_handler",
    "windows_paths",
]

WSL_BINARY = "/usr/local/bin/tailscale-wsl2"
WSL_UNIT = "/etc/systemd/system/tailscale-wsl2.service"
WSL_LOG = "/var/log/tailscale-wsl2.log"
# /usr/bin on distros that merged /usr, /bin on the ones that did not.
SYSTEMCTL_CANDIDATES = ("/usr/bin/systemctl", "/bin/systemctl")
LOG_MAX_BYTES = 1024 * 1024
LOG_BACKUPS = 3


def _windows_dir(environ: Mapping[str, str], name: str) -> PureWindowsPath:
    value = environ_value(environ, name)
    if not value:
        raise ActionableError(
            f"%{name}% is not set, so install does not know where to put the program",
            "run install from a normal Windows session (cmd or PowerShell)",
        )
    return PureWindowsPath(value)


@dataclass(frozen=True)
class WindowsPaths:
    exe: str
    log_dir: str
    log_file: str
    task_xml: str  # where the task definition is written for schtasks to read


def windows_paths(environ: Mapping[str, str]) -> WindowsPaths:
    local = _windows_dir(environ, "LOCALAPPDATA")
    logs = local / "tailscale-wsl2" / "logs"
    return WindowsPaths(
        # `w` as in pythonw.exe: the windowless copy (windowless.py), which shows nothing when
        # run in a terminal, so it must not pass for the tailscale-wsl2.exe users run there.
        exe=str(local / "Programs" / "tailscale-wsl2" / "tailscale-wsl2w.exe"),
        log_dir=str(logs),
        log_file=str(logs / "tailscale-wsl2.log"),
        task_xml=str(_windows_dir(environ, "TEMP") / "tailscale-wsl2-task.xml"),
    )


def rotating_log_handler(
    path: Path, max_bytes: int = LOG_MAX_BYTES, backups: int = LOG_BACKUPS
) -> logging.handlers.RotatingFileHandler:
    """A handler writing `path`, keeping at most `backups` older files of `max_bytes` each."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True
    )
    # Unlike the terminal's, a log file spans days: the date goes in.
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    return handler


def rotated_log_files(path: str, backups: int = LOG_BACKUPS) -> list[str]:
    """The log file and the older files its rotation keeps beside it (`NAME.1` is the newest)."""
    return [path, *(f"{path}.{number}" for number in range(1, backups + 1))]
