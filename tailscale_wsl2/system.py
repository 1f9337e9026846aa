"""The one seam for asking the running system: running a program, reading a file.

Code that needs a program's output or a file's text takes a function of these types as a
parameter; these are the real ones, and tests hand in canned answers taken from real machines.
Console programs on Windows print in the OEM code page, not the ANSI one Python assumes, so the
decoding is decided here, once.
"""

import codecs
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "COMMAND_TIMEOUT_SECONDS",
    "CommandResult",
    "RunCommand",
    "RunCommandTimed",
    "TimedOut",
    "oem_codec",
    "read_text_if_present",
    "run_command",
    "run_command_timed",
]

# Generous: on a Windows host with hundreds of firewall rules, `netsh ... show rule name=all
# verbose` takes several seconds, and WSL interop's first call in a session can too.
COMMAND_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    output: str  # stdout, then stderr


@dataclass(frozen=True)
class TimedOut:
    """The program ran but gave no answer within `seconds` (and was stopped)."""

    seconds: float


# None: the program could not be run at all (missing, or no answer in time).
RunCommand = Callable[[Sequence[str]], CommandResult | None]
# The same, for callers that tell the user "no answer in time" apart from "could not run".
RunCommandTimed = Callable[[Sequence[str]], CommandResult | TimedOut | None]


def oem_codec(code_page: int) -> str:
    """The Python codec for a Windows OEM code page (437, 850, 932, ...).

    Should Python not know the code page, Latin-1 still decodes every byte, and everything the
    parsers need (digits, dots, "IPv4", "vEthernet (WSL)") is ASCII in every OEM code page.
    """
    codec = f"cp{code_page}"
    try:
        codecs.lookup(codec)
    except LookupError:
        return "latin-1"
    return codec


def _console_codec() -> str:
    if sys.platform != "win32":
        return "utf-8"
    import ctypes  # noqa: PLC0415 (Windows only)

    return oem_codec(ctypes.windll.kernel32.GetOEMCP())


def _no_console_window() -> int:
    # A windowless program (the installed half) would otherwise flash a console per command.
    if sys.platform != "win32":
        return 0
    return subprocess.CREATE_NO_WINDOW


def run_command_timed(
    argv: Sequence[str], *, timeout: float = COMMAND_TIMEOUT_SECONDS
) -> CommandResult | TimedOut | None:
    """Run `argv` with a time limit and capture its output; TimedOut when it gave no answer
    in time, None when it cannot be run."""
    try:
        completed = subprocess.run(
            list(argv),
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
            creationflags=_no_console_window(),
        )
    except subprocess.TimeoutExpired:
        return TimedOut(timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    codec = _console_codec()
    output = completed.stdout.decode(codec, "replace") + completed.stderr.decode(codec, "replace")
    return CommandResult(completed.returncode, output)


def run_command(
    argv: Sequence[str], *, timeout: float = COMMAND_TIMEOUT_SECONDS
) -> CommandResult | None:
    """Run `argv` with a time limit and capture its output; None when it cannot be run."""
    answer = run_command_timed(argv, timeout=timeout)
    return answer if isinstance(answer, CommandResult) else None


def read_text_if_present(path: Path) -> str | None:
    """The file's text, or None when it is missing or unreadable (not a finding by itself)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
