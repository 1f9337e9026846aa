"""/etc/wsl.conf: starting the WSL2 half at boot without systemd, by editing the user's text.

Facts this module relies on, from WSL's own source (microsoft/WSL, src/linux/init and
src/shared/configfile/configfile.cpp) and its documentation (learn.microsoft.com, "wsl-config"):

- `[boot] command` is run once when the distro starts, as root, by `/bin/sh -c COMMAND`, in a
  child process WSL does not wait for. Only one command exists: WSL takes the first
  `command=` in `[boot]` and warns about any later one.
- `[boot] systemd=true` (`1`/`true`, any case) starts systemd on WSL 2; the service is then the
  way to start the WSL2 half, and `choose_boot_path` says so.
- The parser is not an INI library. Sections and keys are ASCII letters then letters or digits,
  compared without case; `#` starts a comment (also after a value, unless inside `"`);
  a value may hold `"`-quoted parts and the escapes `\\\\ \\" \\b \\n \\t`, and a `\\` at the end of
  a line continues it. Anything else, a `;` comment included, is an invalid line, and WSL
  **stops reading the file there**: every setting below it is ignored.
- `[automount] root` (default `/mnt/`, a `/` appended when missing) is where the Windows drives
  are mounted, so where `cmd.exe` is.

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
    "remove_boot_command",
]

WSL_CONF = "/etc/wsl.conf"
BOOT_MARKER = "TAILSCALE_WSL2_BOOT=1"
DEFAULT_AUTOMOUNT_ROOT = "/mnt/"
WSLPATH_CANDIDATES = ("/usr/bin/wslpath", "/bin/wslpath")

_HSPACE = " \t"
_ESCAPES = {"\\": "\\", '"': '"', "b": "\b", "n": "\n", "t": "\t"}
# Characters our boot command may not contain, so that its text in the file is its value.
_NOT_CARRIED = re.compile(r'["\\#\r\n]')
_LONE_CR = re.compile(r"\r(?!\n)")


class Kind(enum.Enum):
    """What a line of wsl.conf is to WSL's parser."""

    BLANK = "blank"
    COMMENT = "comment"
    SECTION = "section"
    KEY = "key"
    INVALID = "invalid"


@dataclass(frozen=True)
class Line:
    """One logical line of the file: `text[start:end]`, its line ending included."""

    number: int
    start: int
    end: int
    kind: Kind
    name: str = ""  # section or key name, lower case
    section: str | None = None  # the section a key is in, lower case
    value: str = ""  # a key's value, decoded as WSL decodes it
    value_start: int = 0  # where the value's text begins and ends in the file
    value_end: int = 0
    problem: str = ""  # why WSL stops reading here (INVALID)


def _is_letter(char: str) -> bool:
    return char.isascii() and char.isalpha()


def _is_letter_or_digit(char: str) -> bool:
    return char.isascii() and char.isalnum()


def _line_end(text: str, pos: int) -> int:
    newline = text.find("\n", pos)
    return len(text) if newline < 0 else newline + 1


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _name_end(text: str, pos: int) -> int:
    while pos < len(text) and _is_letter_or_digit(text[pos]):
        pos += 1
    return pos


@dataclass(frozen=True)
class _Value:
    decoded: str
    raw_end: int  # after the value's last character that is not trailing space
    stop: int  # where reading stopped: a comment, the line's end, or the file's end
    problem: str


def _scan_value(text: str, pos: int) -> _Value:
    """Read a value from `pos` as WSL does: quotes, escapes, continuations, a comment."""
    decoded: list[str] = []
    kept = 0  # decoded length without trailing space
    raw_end = pos
    in_quote = False
    while pos < len(text) and text[pos] not in "\r\n":
        char = text[pos]
        if char == "#" and not in_quote:
            break
        if char == '"':
            in_quote = not in_quote
        elif char == "\\":
            follower = text[pos + 1] if pos + 1 < len(text) else ""
            if follower == "\n":
                pass  # a continuation: the value goes on on the next line
            elif follower == "\r":
                pass  # WSL drops the CR; the LF after it ends the value
            elif follower in _ESCAPES:
                decoded.append(_ESCAPES[follower])
            else:
                problem = f'`\\{follower}` is not an escape WSL knows (\\\\ \\" \\b \\n \\t)'
                return _Value("", pos, pos, problem)
            pos += 1
        else:
            decoded.append(char)
        pos += 1
        if char not in _HSPACE:
            kept, raw_end = len(decoded), pos
    if in_quote:
        return _Value("", raw_end, pos, 'a `"` is not closed on this line')
    return _Value("".join(decoded[:kept]), raw_end, pos, "")


def _invalid(number: int, start: int, text: str, pos: int, problem: str) -> Line:
    return Line(number, start, _line_end(text, pos), Kind.INVALID, problem=problem)


def _section_line(number: int, start: int, text: str, pos: int) -> Line:
    name_end = _name_end(text, pos + 1)
    if name_end == pos + 1 or not _is_letter(text[pos + 1]) or text[name_end : name_end + 1] != "]":
        return _invalid(number, start, text, pos, "a section header is [name], letters and digits")
    after = _skip(text, name_end + 1, _HSPACE)
    if after < len(text) and text[after] not in "#\r\n":
        return _invalid(number, start, text, pos, "only a # comment may follow a section header")
    name = text[pos + 1 : name_end].lower()
    return Line(number, start, _line_end(text, after), Kind.SECTION, name=name)


def _key_line(number: int, start: int, text: str, pos: int, section: str | None) -> Line:
    name_end = _name_end(text, pos)
    equals = _skip(text, name_end, _HSPACE)
    if text[equals : equals + 1] != "=":
        problem = "a setting is key=value, the key letters and digits"
        return _invalid(number, start, text, pos, problem)
    value_start = _skip(text, equals + 1, _HSPACE)
    value = _scan_value(text, value_start)
    if value.problem:
        return _invalid(number, start, text, value.stop, value.problem)
    return Line(
        number,
        start,
        _line_end(text, value.stop),
        Kind.KEY,
        name=text[pos:name_end].lower(),
        section=section,
        value=value.decoded,
        value_start=value_start,
        value_end=value.raw_end,
    )


def _lex(text: str) -> list[Line]:
    lines: list[Line] = []
    pos, number, section = 0, 1, None
    while pos < len(text):
        first = _skip(text, pos, _HSPACE)
        char = text[first : first + 1]
        if char in ("", "\r", "\n"):
            line = Line(number, pos, _line_end(text, first), Kind.BLANK)
        elif char == "#":
            line = Line(number, pos, _line_end(text, first), Kind.COMMENT)
        elif char == "[":
            line = _section_line(number, pos, text, first)
            section = line.name if line.kind is Kind.SECTION else section
        elif _is_letter(char):
            line = _key_line(number, pos, text, first, section)
        elif char == ";":
            line = _invalid(number, pos, text, first, "`;` does not start a comment in wsl.conf")
        else:
            problem = "expected a [section], key=value or # comment"
            line = _invalid(number, pos, text, first, problem)
        if line.kind is not Kind.COMMENT and _LONE_CR.search(text, line.start, line.end):
            # WSL ends a line there and reads the rest as the next line; a text editor does not.
            line = _invalid(number, pos, text, pos, "a carriage return inside a line")
        lines.append(line)
        number += text.count("\n", line.start, line.end)
        pos = line.end
    return lines


def _wsl_settings(text: str | None) -> dict[str, str]:
    """The settings WSL itself takes from the file: up to its first invalid line, first wins."""
    settings: dict[str, str] = {}
    for line in _lex(text or ""):
        if line.kind is Kind.INVALID:
            break
        if line.kind is Kind.KEY and line.section is not None:
            settings.setdefault(f"{line.section}.{line.name}", line.value)
    return settings


def effective_setting(wsl_conf_text: str | None, name: str) -> str | None:
    """A setting (`section.key`) as WSL reads it, e.g. `boot.command`; None when unset."""
    return _wsl_settings(wsl_conf_text).get(name.lower())


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
    wants_systemd = _parse_bool(_wsl_settings(wsl_conf_text).get("boot.systemd", "")) is True
    # WSL 1 ignores systemd=true: it has no VM to run systemd as PID 1 in.
    if systemd_running or (wants_systemd and not wsl1):
        return BootPath.SYSTEMD
    return BootPath.BOOT_COMMAND


def automount_root(wsl_conf_text: str | None) -> str:
    """Where WSL mounts the Windows drives, ending in `/` as WSL makes it."""
    root = _wsl_settings(wsl_conf_text).get("automount.root", DEFAULT_AUTOMOUNT_ROOT)
    return root if root.endswith("/") else root + "/"


@dataclass(frozen=True)
class WindowsTools:
    """Absolute paths of the interop tools, for code that runs with no Windows folders on PATH."""

    cmd_exe: str
    wslpath: str


def find_windows_tools(wsl_conf_text: str | None, exists: Callable[[str], bool]) -> WindowsTools:
    """`cmd.exe` under the automount root (drive C first), and `wslpath`."""
    root = automount_root(wsl_conf_text)
    drives = "c" + "abdefghijklmnopqrstuvwxyz"
    cmd_exe = next(
        (path for d in drives if exists(path := f"{root}{d}/Windows/System32/cmd.exe")), None
    )
    if cmd_exe is None:
        raise ActionableError(
            f"no Windows/System32/cmd.exe on any drive under {root} (from [automount] root)",
            f"check that Windows drives are mounted there (`ls {root}c`), or pass --key-file PATH",
        )
    wslpath = next((path for path in WSLPATH_CANDIDATES if exists(path)), None)
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
            first = text[line.start : line.end].lstrip(_HSPACE)
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
    command = _wsl_settings(wsl_conf_text).get("boot.command", "")
    return _our_segment_end(command) is not None


def merge_boot_command(
    wsl_conf_text: str | None, segment: str, *, force: bool = False, path: str = WSL_CONF
) -> str:
    """The file's text with our segment leading its [boot] command; every other byte kept."""
    text = wsl_conf_text or ""
    lines = _lex(text)
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
        theirs = raw_value[ours_end:].lstrip(_HSPACE)
        new_value = f"{segment} {theirs}" if theirs else segment
    elif not command.value.strip():
        new_value = segment
    else:
        if "tailscale-wsl2" in command.value and not force:
            raise _fail(
                path,
                command,
                f"the boot command already starts tailscale-wsl2 by hand: {command.value}",
                f"remove that part with `sudoedit {path}`, or run install with --force",
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
    lines = _lex(text)
    _check_editable(lines, text, path)
    header, body = _boot_lines(lines)
    command = _command_line(body)
    ours_end = _our_segment_end(command.value) if command else None
    if header is None or command is None or ours_end is None:
        return None  # our command is in a file we may not edit; _check_editable said why
    raw_value = text[command.value_start : command.value_end]
    theirs = raw_value[ours_end:].lstrip(_HSPACE)
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
