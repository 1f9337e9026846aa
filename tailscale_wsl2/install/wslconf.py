"""/etc/wsl.conf: starting the WSL2 half at boot without systemd, by editing the user's text.

Facts this module relies on, from WSL's own source (microsoft/WSL, src/linux/init and
src/shared/configfile/configfile.cpp) and its documentation (learn.microsoft.com, "wsl-config"):

- `[boot] command` is run once when the distro starts, as root, by `/bin/sh -c COMMAND`, in a
  child process WSL does not wait for. Only one command exists: WSL takes the first
  `command=` in `[boot]` and warns about any later one.
- `[boot] systemd=true` (`1`/`true`, any case) starts systemd on WSL 2; the service is then the
  way to start the WSL2 half, and `choose_boot_path` says so.
- How WSL reads the file (which lines it accepts, where it stops) is in
  `tailscale_wsl2/wslconf_syntax.py`, shared with `system`, which finds `cmd.exe` through it.

Hence the strategy: the file is edited as text, never parsed and re-written, so comments, blank
lines, other sections, key order, unknown keys and line endings all stay as they were. A file
WSL stops reading part-way (so that it ignores settings, perhaps ours), or one that is ambiguous
to edit (a key outside any section, a section or key given twice), is refused with its line
number and the fix.

Someone else's boot command is kept, not replaced: ours goes first, ended by `&` so that it runs
in the background, and theirs follows unchanged, so neither can delay or prevent the other.
`sh -c "ours & theirs"` runs both. Ours starts with a marker (an environment assignment,
`TAILSCALE_WSL2_BOOT=1`), which is how `uninstall` finds it and gives back their command
byte for byte.
"""

import enum
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.system import WSLPATH_CANDIDATES, find_cmd_exe, find_first
from tailscale_wsl2.wslconf_syntax import (
    HSPACE,
    Kind,
    Line,
    automount_root,
    effective_setting,
    lex,
    wsl_settings,
)

__all__ = [
    "BOOT_MARKER",
    "WSL_CONF",
    "BootPath",
    "WindowsTools",
    "automount_root",
    "boot_command_segment",
    "choose_boot_path",
    "effective_setting",
    "find_windows_tools",
    "has_our_boot_command",
    "merge_boot_command",
    "our_boot_segment",
    "remove_boot_command",
]

WSL_CONF = "/etc/wsl.conf"
BOOT_MARKER = "TAILSCALE_WSL2_BOOT=1"

# Characters our boot command may not contain, so that its text in the file is its value.
_NOT_CARRIED = re.compile(r'["\\#\r\n]')


def _parse_bool(text: str) -> bool | None:
    lowered = text.lower()
    return True if lowered in ("1", "true") else False if lowered in ("0", "false") else None


class BootPath(enum.Enum):
    """How the WSL2 half gets started when the distro starts."""

    SYSTEMD = "a systemd service"
    BOOT_COMMAND = "the [boot] command in /etc/wsl.conf"


def choose_boot_path(
    wsl_conf_text: str | None, *, systemd_running: bool, wsl1: bool = False
) -> BootPath:
    """Systemd when it runs now, or will from the next start (`[boot] systemd=true`, WSL 2)."""
    wants_systemd = _parse_bool(wsl_settings(wsl_conf_text).get("boot.systemd", "")) is True
    # WSL 1 ignores systemd=true: it has no VM to run systemd as PID 1 in.
    if systemd_running or (wants_systemd and not wsl1):
        return BootPath.SYSTEMD
    return BootPath.BOOT_COMMAND


@dataclass(frozen=True)
class WindowsTools:
    """Absolute paths of the interop tools, for code that runs with no Windows folders on PATH."""

    cmd_exe: str
    wslpath: str


def find_windows_tools(wsl_conf_text: str | None, exists: Callable[[str], bool]) -> WindowsTools:
    """`cmd.exe` under the automount root (drive C first), and `wslpath`, or why not."""
    root = automount_root(wsl_conf_text)
    cmd_exe = find_cmd_exe(root, exists)
    if cmd_exe is None:
        raise ActionableError(
            f"no Windows/System32/cmd.exe on any drive under {root} (from [automount] root)",
            f"check that Windows drives are mounted there (`ls {root}c`), or pass --key-file PATH",
        )
    wslpath = find_first(WSLPATH_CANDIDATES, exists)
    if wslpath is None:
        raise ActionableError(
            f"wslpath is in neither {' nor '.join(WSLPATH_CANDIDATES)}",
            "run install inside WSL, or pass --key-file PATH",
        )
    return WindowsTools(cmd_exe, wslpath)


def boot_command_segment(
    program: str,
    arguments: Sequence[str],
    log_path: str,
    environment: Mapping[str, str] | None = None,
) -> str:
    """Our part of the boot command: marked, in the background, output to `log_path`.

    `environment` is set for the program only (`NAME=value` before it, as sh allows).
    """
    assignments = [f"{name}={shlex.quote(value)}" for name, value in (environment or {}).items()]
    words = " ".join([*assignments, *(shlex.quote(word) for word in (program, *arguments))])
    segment = f"{BOOT_MARKER} {words} </dev/null >>{shlex.quote(log_path)} 2>&1 &"
    if _NOT_CARRIED.search(segment):
        raise ActionableError(
            f"the boot command would contain a character /etc/wsl.conf cannot carry: {segment}",
            'install to a path without " \\ or # characters (and pass --key-file likewise)',
        )
    return segment


def _our_segment_end(value: str) -> int | None:
    """Where our segment (marker ... &) ends in a command value, or None if it is not ours."""
    if not value.startswith(BOOT_MARKER + " "):
        return None
    in_single_quote = False
    for index, char in enumerate(value):
        if char == "'":
            in_single_quote = not in_single_quote
        elif (
            char == "&"
            and not in_single_quote
            and value[index - 1] == " "
            and value[index + 1 : index + 2] in ("", " ", "\t")
        ):
            return index + 1
    return None


def _line_ending(text: str) -> str:
    return "\r\n" if text.count("\r\n") * 2 > text.count("\n") else "\n"


def _fail(path: str, line: Line, what: str, fix: str) -> ActionableError:
    return ActionableError(f"{path} line {line.number}: {what}", fix)


def _edit_fix(path: str, line: Line) -> str:
    return f"correct or delete line {line.number} with `sudoedit {path}`, then run install again"


def _check_editable(lines: list[Line], text: str, path: str) -> None:
    """Refuse a file WSL stops reading, or one whose edit would be ambiguous."""
    if text.startswith("\ufeff"):
        raise ActionableError(
            f"{path} starts with a byte-order mark, at which WSL stops reading the file",
            f"remove it with `sudo sed -i '1s/^\\xEF\\xBB\\xBF//' {path}`",
        )
    sections: dict[str, Line] = {}
    keys: dict[tuple[str, str], Line] = {}
    for line in lines:
        if line.kind is Kind.INVALID:
            first = text[line.start : line.end].lstrip(HSPACE)
            fix = (
                f"make it a # comment with `sudo sed -i '{line.number}s/;/#/' {path}`"
                if first.startswith(";")
                else _edit_fix(path, line)
            )
            raise _fail(path, line, f"{line.problem}; WSL stops reading the file here", fix)
        if line.kind is Kind.SECTION:
            if line.name in sections:
                first_seen = sections[line.name].number
                raise _fail(
                    path,
                    line,
                    f"[{line.name}] again (first on line {first_seen})",
                    f"merge the two into one section with `sudoedit {path}`",
                )
            sections[line.name] = line
        if line.kind is Kind.KEY:
            if line.section is None:
                raise _fail(
                    path, line, f"{line.name}= is outside any [section]", _edit_fix(path, line)
                )
            key = (line.section, line.name)
            if key in keys:
                raise _fail(
                    path,
                    line,
                    f"{line.name}= again in [{line.section}] (first on line {keys[key].number})",
                    f"keep one of the two with `sudoedit {path}`",
                )
            keys[key] = line


def _boot_lines(lines: list[Line]) -> tuple[Line | None, list[Line]]:
    """The [boot] header and the lines of its section."""
    header = next((ln for ln in lines if ln.kind is Kind.SECTION and ln.name == "boot"), None)
    if header is None:
        return None, []
    index = lines.index(header) + 1
    body: list[Line] = []
    while index < len(lines) and lines[index].kind is not Kind.SECTION:
        body.append(lines[index])
        index += 1
    return header, body


def _command_line(body: list[Line]) -> Line | None:
    return next((ln for ln in body if ln.kind is Kind.KEY and ln.name == "command"), None)


def _splice(text: str, start: int, end: int, replacement: str) -> str:
    return text[:start] + replacement + text[end:]


def has_our_boot_command(wsl_conf_text: str | None) -> bool:
    """Whether the file's [boot] command starts with our segment."""
    return our_boot_segment(wsl_conf_text) is not None


def our_boot_segment(wsl_conf_text: str | None) -> str | None:
    """Our segment of the [boot] command as WSL reads it, or None when it has none."""
    command = wsl_settings(wsl_conf_text).get("boot.command", "")
    end = _our_segment_end(command)
    return None if end is None else command[:end]


def merge_boot_command(
    wsl_conf_text: str | None,
    segment: str,
    *,
    force: bool = False,
    path: str = WSL_CONF,
    forced: str = "sudo tailscale-wsl2 install --force",
) -> str:
    """The file's text with our segment leading its [boot] command; every other byte kept.
    `forced` is the user's install command with --force, for the fix that names it."""
    text = wsl_conf_text or ""
    lines = lex(text)
    _check_editable(lines, text, path)
    ending = _line_ending(text)
    header, body = _boot_lines(lines)
    if header is None:
        return _append_boot_section(text, lines, segment, ending)
    command = _command_line(body)
    if command is None:
        last_key = next((ln for ln in reversed(body) if ln.kind is Kind.KEY), header)
        insert_at = last_key.end
        prefix = "" if text[:insert_at].endswith("\n") else ending
        return _splice(text, insert_at, insert_at, f"{prefix}command={segment}{ending}")
    raw_value = text[command.value_start : command.value_end]
    ours_end = _our_segment_end(command.value)
    if ours_end is not None:  # ours: replace our part, keep theirs after it
        theirs = raw_value[ours_end:].lstrip(HSPACE)
        new_value = f"{segment} {theirs}" if theirs else segment
    elif not command.value.strip():
        new_value = segment
    else:
        if "tailscale-wsl2" in command.value and not force:
            raise _fail(
                path,
                command,
                f"the boot command already starts tailscale-wsl2 by hand: {command.value}",
                f"remove that part with `sudoedit {path}`, or run `{forced}`",
            )
        new_value = f"{segment} {raw_value}"
    return _splice(text, command.value_start, command.value_end, new_value)


def _append_boot_section(text: str, lines: list[Line], segment: str, ending: str) -> str:
    if text and not text.endswith("\n"):
        text += ending
    separator = ending if lines and lines[-1].kind is not Kind.BLANK else ""
    return f"{text}{separator}[boot]{ending}command={segment}{ending}"


def remove_boot_command(wsl_conf_text: str | None, *, path: str = WSL_CONF) -> str | None:
    """The file's text without our segment, or None when it has none (nothing to change)."""
    if wsl_conf_text is None or not has_our_boot_command(wsl_conf_text):
        return None
    text = wsl_conf_text
    lines = lex(text)
    _check_editable(lines, text, path)
    header, body = _boot_lines(lines)
    command = _command_line(body)
    ours_end = _our_segment_end(command.value) if command else None
    if header is None or command is None or ours_end is None:
        return None  # our command is in a file we may not edit; _check_editable said why
    raw_value = text[command.value_start : command.value_end]
    theirs = raw_value[ours_end:].lstrip(HSPACE)
    if theirs:
        return _splice(text, command.value_start, command.value_end, theirs)
    rest = [ln for ln in body if ln is not command]
    if any(ln.kind is not Kind.BLANK for ln in rest):
        return _splice(text, command.start, command.end, "")
    return _remove_section(text, lines, header, body)


def _remove_section(text: str, lines: list[Line], header: Line, body: list[Line]) -> str:
    """Remove a [boot] section we emptied, and the blank line install put before it."""
    start, end = header.start, (body[-1].end if body else header.end)
    index = lines.index(header)
    at_end = end == len(text)
    if (
        at_end
        and index >= 2
        and lines[index - 1].kind is Kind.BLANK
        and lines[index - 2].kind is not Kind.BLANK
    ):
        start = lines[index - 1].start
    return _splice(text, start, end, "")
