"""Parsers for what Windows' own tools print: `sc query`, `netstat -ano`, `tasklist`, .wslconfig.

Windows localizes much of this output, so each parser leans on what stays put: `sc` state
*codes* (`STATE : 4 RUNNING`; the word may be translated, the number is not), netstat's layout
(a listening socket is the one whose foreign address has port 0; the state word is translated,
`ABHÖREN` in German), tasklist's CSV columns (`/FO CSV /NH`: image name, PID, ...).
Every parser is pure, so tests feed real samples.
"""

import configparser
import csv
import enum
from dataclasses import dataclass

__all__ = [
    "Listener",
    "ServiceState",
    "parse_netstat_listeners",
    "parse_sc_query",
    "parse_tasklist_image",
    "wslconfig_networking_mode",
]


class ServiceState(enum.Enum):
    RUNNING = "running"
    STOPPED = "stopped"
    PENDING = "starting, stopping or paused"
    NOT_INSTALLED = "not installed"
    UNKNOWN = "unknown"


# SERVICE_STATUS.dwCurrentState (winsvc.h): 1 stopped, 2 start pending, 3 stop pending,
# 4 running, 5 continue pending, 6 pause pending, 7 paused.
_STATE_CODES = {"1": ServiceState.STOPPED, "4": ServiceState.RUNNING}
# sc's error when the service does not exist: ERROR_SERVICE_DOES_NOT_EXIST.
_NO_SUCH_SERVICE = "1060"


def parse_sc_query(text: str) -> ServiceState:
    """The state in `sc query <name>` output."""
    for line in text.splitlines():
        label, colon, value = line.partition(":")
        if colon and label.strip() == "STATE":
            code = value.split()[0] if value.split() else ""
            return _STATE_CODES.get(code, ServiceState.PENDING)
        if "FAILED" in line and _NO_SUCH_SERVICE in line:
            return ServiceState.NOT_INSTALLED
    return ServiceState.UNKNOWN


@dataclass(frozen=True)
class Listener:
    """A listening TCP socket in netstat output: local address, port, owning process."""

    address: str
    port: int
    pid: int


def _listener(fields: list[str]) -> Listener | None:
    if len(fields) != 5 or fields[0].upper() != "TCP" or not fields[4].isdigit():
        return None
    address, _, port = fields[1].rpartition(":")
    _, _, foreign_port = fields[2].rpartition(":")
    if foreign_port != "0" or not port.isdigit():
        return None
    return Listener(address.strip("[]"), int(port), int(fields[4]))


def parse_netstat_listeners(text: str) -> list[Listener]:
    """Listening sockets in `netstat -ano -p TCP` output (columns: proto, local, foreign,
    state, PID)."""
    return [found for line in text.splitlines() if (found := _listener(line.split()))]


def parse_tasklist_image(text: str) -> str | None:
    """The image name in `tasklist /FI "PID eq N" /FO CSV /NH` output; None when no process
    matched (tasklist then prints a localized `INFO:` line instead of CSV)."""
    for row in csv.reader(text.splitlines()):
        if len(row) >= 2 and row[1].isdigit():
            return row[0]
    return None


WSL_DEFAULT_MODE = "nat"


def wslconfig_networking_mode(text: str | None) -> tuple[str, str]:
    """The WSL networking mode %USERPROFILE%\\.wslconfig sets, and where that came from.

    WSL ignores what it cannot read and falls back to NAT; so does this.
    """
    if text is None:
        return WSL_DEFAULT_MODE, "default: no .wslconfig"
    parser = configparser.ConfigParser(inline_comment_prefixes=("#", ";"), strict=False)
    try:
        parser.read_string(text.removeprefix("\ufeff"))  # Notepad may save a BOM
    except configparser.Error as exc:
        first_line = str(exc).splitlines()[0]
        return WSL_DEFAULT_MODE, f"default: .wslconfig is not readable ({first_line})"
    sections = {name.lower(): name for name in parser.sections()}
    section = sections.get("wsl2")
    mode = parser.get(section, "networkingmode", fallback=None) if section else None
    if not mode:
        return WSL_DEFAULT_MODE, "default: .wslconfig sets no [wsl2] networkingMode"
    return mode.strip().lower(), ".wslconfig [wsl2] networkingMode"
