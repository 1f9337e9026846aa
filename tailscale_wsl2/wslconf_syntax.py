"""/etc/wsl.conf as WSL's own parser reads it: its lines, the settings WSL takes from it.

Two parts of the program need this: `install` edits the file (install/wslconf.py) and must know
which lines WSL accepts, and `system.run_command` finds `cmd.exe` under the automount root when
it is not on PATH (under sudo, and at boot). Running a program is the lowest layer, so the
reading lives here, below it, and depends on nothing else in the package.

Facts from WSL's own source (microsoft/WSL, src/shared/configfile/configfile.cpp) and its
documentation (learn.microsoft.com, "wsl-config"): the parser is not an INI library. Sections
and keys are ASCII letters then letters or digits, compared without case; `#` starts a comment
(also after a value, unless inside `"`); a value may hold `"`-quoted parts and the escapes
`\\\\ \\" \\b \\n \\t`, and a `\\` at the end of a line continues it. Anything else, a `;`
comment included, is an invalid line, and WSL **stops reading the file there**: every setting
below it is ignored. The first occurrence of a key wins. `[automount] root` (default `/mnt/`, a
`/` appended when missing) is where the Windows drives are mounted.
"""

import enum
import re
from dataclasses import dataclass

__all__ = [
    "DEFAULT_AUTOMOUNT_ROOT",
    "HSPACE",
    "Kind",
    "Line",
    "automount_root",
    "effective_setting",
    "lex",
    "wsl_settings",
]

DEFAULT_AUTOMOUNT_ROOT = "/mnt/"
HSPACE = " \t"
_ESCAPES = {"\\": "\\", '"': '"', "b": "\b", "n": "\n", "t": "\t"}
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
        if char not in HSPACE:
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
    after = _skip(text, name_end + 1, HSPACE)
    if after < len(text) and text[after] not in "#\r\n":
        return _invalid(number, start, text, pos, "only a # comment may follow a section header")
    name = text[pos + 1 : name_end].lower()
    return Line(number, start, _line_end(text, after), Kind.SECTION, name=name)


def _key_line(number: int, start: int, text: str, pos: int, section: str | None) -> Line:
    name_end = _name_end(text, pos)
    equals = _skip(text, name_end, HSPACE)
    if text[equals : equals + 1] != "=":
        problem = "a setting is key=value, the key letters and digits"
        return _invalid(number, start, text, pos, problem)
    value_start = _skip(text, equals + 1, HSPACE)
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


def lex(text: str) -> list[Line]:
    lines: list[Line] = []
    pos, number, section = 0, 1, None
    while pos < len(text):
        first = _skip(text, pos, HSPACE)
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


def wsl_settings(text: str | None) -> dict[str, str]:
    """The settings WSL itself takes from the file: up to its first invalid line, first wins."""
    settings: dict[str, str] = {}
    for line in lex(text or ""):
        if line.kind is Kind.INVALID:
            break
        if line.kind is Kind.KEY and line.section is not None:
            settings.setdefault(f"{line.section}.{line.name}", line.value)
    return settings


def effective_setting(wsl_conf_text: str | None, name: str) -> str | None:
    """A setting (`section.key`) as WSL reads it, e.g. `boot.command`; None when unset."""
    return wsl_settings(wsl_conf_text).get(name.lower())


def automount_root(wsl_conf_text: str | None) -> str:
    """Where WSL mounts the Windows drives, ending in `/` as WSL makes it."""
    root = wsl_settings(wsl_conf_text).get("automount.root", DEFAULT_AUTOMOUNT_ROOT)
    return root if root.endswith("/") else root + "/"
