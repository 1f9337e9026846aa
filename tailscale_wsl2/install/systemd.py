"""The WSL2 half as a systemd service: the unit's text, its ExecStart quoting, and whose it is.

systemd reads `ExecStart=` with its own rules, not a shell's: words split at whitespace unless
double- or single-quoted, C escapes (`\\n`, `\\"`, `\\\\`, `\\xNN`) inside quotes, `%` specifiers
expanded in every word (quoted or not, so a literal `%` is `%%`), `$VAR` expanded at start time
in the arguments (a literal `$` is `$$`) but not in the program path, and a lone `;` between
commands. `quote_exec_argument` writes a word that survives all of that; the tests check it
against `systemd-analyze verify`'s own dump of the parsed command line.

The unit's first line is a marker carrying the SHA-256 of the lines below it. A unit whose
marker is intact and whose digest matches is ours and unchanged, even if an older version of
`install` wrote different lines, so upgrades overwrite it freely. A digest that no longer
matches means someone edited it; no marker means someone else wrote it. `install` refuses to
overwrite either without `--force`, and `uninstall` refuses to remove them.
"""

import enum
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from tailscale_wsl2.errors import ActionableError

__all__ = [
    "UNIT_NAME",
    "UnitSpec",
    "UnitState",
    "check_may_overwrite",
    "check_may_remove",
    "classify_unit",
    "exec_start_value",
    "quote_exec_argument",
    "quote_exec_program",
    "render_unit",
]

UNIT_NAME = "tailscale-wsl2.service"
# The service manager's default PATH, written out so that nothing in the unit depends on the
# Windows folders WSL appends to a login shell's PATH (they are not there under systemd).
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_MARKER = re.compile(
    r"# Written by tailscale-wsl2 install \(sha256 of the lines below: (?P<digest>[0-9a-f]{64})\)"
)
# Words that need no quoting: nothing systemd splits at or unescapes. `%` and `$` may appear
# because they arrive here already doubled.
_BARE_WORD = re.compile(r"[A-Za-z0-9_@%+=:,./$-]+")
_C_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape_char(char: str) -> str:
    if char in _C_ESCAPES:
        return _C_ESCAPES[char]
    if ord(char) < 0x20 or ord(char) == 0x7F:
        return f"\\x{ord(char):02x}"
    return char


def _double_quoted(text: str) -> str:
    return '"' + "".join(_escape_char(char) for char in text) + '"'


def quote_exec_argument(argument: str) -> str:
    """One ExecStart= argument word that systemd turns back into exactly `argument`."""
    if "\0" in argument:
        raise ValueError("a command-line argument cannot contain NUL")
    escaped = argument.replace("%", "%%").replace("$", "$$")
    return escaped if _BARE_WORD.fullmatch(escaped) else _double_quoted(escaped)


def quote_exec_program(path: str) -> str:
    """The program word of ExecStart=: absolute, specifiers escaped, no `$` expansion there."""
    if not path.startswith("/"):
        raise ValueError(f"the program must be an absolute path: {path!r}")
    # systemd refuses quotes, backslashes and control characters in the executable's path,
    # and expands `$` in argv[0] but not in the path it runs, so no quoting makes them safe.
    if any(char in "\"'\\$" or ord(char) < 0x20 or ord(char) == 0x7F for char in path):
        raise ActionableError(
            f"the program's path {path!r} contains a character a systemd unit cannot carry",
            "move tailscale-wsl2 to a plain path such as /usr/local/bin, then run install again",
        )
    escaped = path.replace("%", "%%")
    return escaped if _BARE_WORD.fullmatch(escaped) else _double_quoted(escaped)


def exec_start_value(program: str, arguments: Sequence[str]) -> str:
    """The value of ExecStart= that runs `program` with `arguments`, word for word."""
    return " ".join([quote_exec_program(program), *map(quote_exec_argument, arguments)])


@dataclass(frozen=True)
class UnitSpec:
    """What the service runs: `program` (absolute) with `arguments` (`up ...`)."""

    program: str
    arguments: tuple[str, ...]
    # The group the WSL2 half gives its socket to; it reads SUDO_GID, as it does under sudo.
    socket_gid: int | None


def _body(spec: UnitSpec) -> str:
    environment = [f"Environment=PATH={SERVICE_PATH}"]
    if spec.socket_gid is not None:
        environment += [
            "# The group that may use /var/run/tailscale/tailscaled.sock (as under sudo).",
            f"Environment=SUDO_GID={spec.socket_gid:d}",
        ]
    lines = [
        "[Unit]",
        "Description=tailscale-wsl2: the tailscale CLI in WSL2 uses Tailscale on Windows",
        "After=network-online.target",
        "Wants=network-online.target",
        "# tailscaled would serve the same socket.",
        "Conflicts=tailscaled.service",
        "# Keep retrying (every RestartSec) until the Windows half has made the link key.",
        "StartLimitIntervalSec=0",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={exec_start_value(spec.program, spec.arguments)}",
        *environment,
        "Restart=on-failure",
        "RestartSec=5",
        "KillSignal=SIGTERM",
        "# The relay gives open connections 2 s after SIGTERM.",
        "TimeoutStopSec=10",
        "StandardOutput=journal",
        "StandardError=journal",
        "SyslogIdentifier=tailscale-wsl2",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8", "surrogateescape")).hexdigest()


def render_unit(spec: UnitSpec) -> str:
    """The whole unit file: the marker line, then the unit."""
    body = _body(spec)
    marker = f"# Written by tailscale-wsl2 install (sha256 of the lines below: {_digest(body)})"
    return f"{marker}\n{body}"


class UnitState(enum.Enum):
    ABSENT = "absent"
    OURS_UNCHANGED = "written by install, unchanged since"
    OURS_EDITED = "written by install, edited since"
    NOT_OURS = "not written by install"


def classify_unit(text: str | None) -> UnitState:
    """Whose the unit file at our path is, from its text (None: there is no file)."""
    if text is None:
        return UnitState.ABSENT
    marker, newline, body = text.partition("\n")
    match = _MARKER.fullmatch(marker)
    if match is None or not newline:
        return UnitState.NOT_OURS
    return UnitState.OURS_UNCHANGED if match["digest"] == _digest(body) else UnitState.OURS_EDITED


def _what_happened(state: UnitState, path: str) -> str:
    if state is UnitState.OURS_EDITED:
        return f"{path} was edited by hand since tailscale-wsl2 install wrote it"
    return f"{path} was not written by tailscale-wsl2 install"


def check_may_overwrite(
    state: UnitState,
    path: str,
    force: bool,
    forced: str = "sudo tailscale-wsl2 install --force",
) -> None:
    """Raise unless writing our unit over what is at `path` loses nobody's work; the fix names
    `forced`, the user's install command with --force."""
    if force or state in (UnitState.ABSENT, UnitState.OURS_UNCHANGED):
        return
    raise ActionableError(_what_happened(state, path), f"keep it, or replace it with `{forced}`")


def check_may_remove(
    state: UnitState,
    path: str,
    force: bool,
    forced: str = "sudo tailscale-wsl2 uninstall --force",
) -> None:
    """Raise unless removing `path` removes only what install wrote."""
    if force or state in (UnitState.ABSENT, UnitState.OURS_UNCHANGED):
        return
    raise ActionableError(_what_happened(state, path), f"keep it, or remove it with `{forced}`")
