"""The one seam for asking the running system: running a program, reading a file.

Code that needs a program's output or a file's text takes a function of these types as a
parameter; these are the real ones, and tests hand in canned answers taken from real machines.
Console programs on Windows print in the OEM code page, not the ANSI one Python assumes, so the
decoding is decided here, once.

Callers name programs by their bare names (`netsh`, `cmd.exe`); which file runs is decided
here, once, by `resolve_program`:
- On Windows the system tools come from `%SystemRoot%\\System32`. Windows looks for a bare name
  in the program's own directory first, and the `.exe` often runs from Downloads, where a
  planted `netsh.exe` would otherwise be run, elevated at that.
- In WSL `cmd.exe` and `wslpath` are found where WSL puts them when they are not on PATH, which
  is the case under `sudo` and at boot (WSL appends the Windows folders to a login shell's PATH
  only): `cmd.exe` under the automount root of /etc/wsl.conf, `wslpath` in /usr/bin or /bin.
"""

import codecs
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

from tailscale_wsl2.wslconf_syntax import automount_root

__all__ = [
    "COMMAND_TIMEOUT_SECONDS",
    "WINDOWS_SYSTEM_TOOLS",
    "WSLPATH_CANDIDATES",
    "CommandResult",
    "ProgramLookup",
    "RunCommand",
    "RunCommandTimed",
    "TimedOut",
    "environ_value",
    "find_cmd_exe",
    "find_first",
    "oem_codec",
    "read_text_if_present",
    "resolve_program",
    "run_command",
    "run_command_timed",
    "this_system",
    "windows_system_tool",
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


# The Windows tools the program runs, always from System32 (see the module's docstring).
WINDOWS_SYSTEM_TOOLS = frozenset(
    {"netsh", "icacls", "ipconfig", "sc", "tasklist", "schtasks", "whoami", "netstat"}
)
# wslpath is a link to WSL's init; /usr/bin on distros that merged /usr, /bin on the others.
WSLPATH_CANDIDATES = ("/usr/bin/wslpath", "/bin/wslpath")
WSL_CONF = Path("/etc/wsl.conf")
# Drive C first: Windows is there on nearly every machine.
_DRIVE_LETTERS = "c" + "abdefghijklmnopqrstuvwxyz"


def environ_value(environ: Mapping[str, str], name: str) -> str | None:
    """An environment variable by name compared without case, as Windows compares them."""
    wanted = name.upper()
    return next((value for key, value in environ.items() if key.upper() == wanted), None)


def find_first(candidates: Iterable[str], exists: Callable[[str], bool]) -> str | None:
    """The first path of `candidates` that `exists`."""
    return next((path for path in candidates if exists(path)), None)


def windows_system_tool(name: str, environ: Mapping[str, str]) -> str | None:
    """`%SystemRoot%\\System32\\NAME.exe` for a bare name of WINDOWS_SYSTEM_TOOLS, else None."""
    tool = name.lower().removesuffix(".exe")
    if tool not in WINDOWS_SYSTEM_TOOLS or name != PureWindowsPath(name).name:
        return None
    system_root = environ_value(environ, "SystemRoot") or environ_value(environ, "windir")
    return str(PureWindowsPath(system_root or r"C:\Windows", "System32", f"{tool}.exe"))


def find_cmd_exe(automount: str, exists: Callable[[str], bool]) -> str | None:
    """`cmd.exe` on the first Windows drive mounted under `automount` that has one."""
    return find_first(
        (f"{automount}{drive}/Windows/System32/cmd.exe" for drive in _DRIVE_LETTERS), exists
    )


@dataclass(frozen=True)
class ProgramLookup:
    """What resolving a program's name reads of the system; tests pass their own."""

    platform: str
    environ: Mapping[str, str]
    which: Callable[[str], str | None]  # the program on PATH, or None
    exists: Callable[[str], bool]
    wsl_conf_text: Callable[[], str | None]


def _read_wsl_conf() -> str | None:
    try:
        return WSL_CONF.read_bytes().decode("utf-8", "surrogateescape")
    except OSError:
        return None


def this_system() -> ProgramLookup:
    return ProgramLookup(
        platform=sys.platform,
        environ=os.environ,
        which=shutil.which,
        exists=os.path.exists,
        wsl_conf_text=_read_wsl_conf,
    )


def resolve_program(name: str, lookup: ProgramLookup | None = None) -> str:
    """The file to run for the program `name` (see the module's docstring); `name` itself when
    nothing better is known, so that the failure to run it is reported as before."""
    lookup = lookup or this_system()
    if lookup.platform == "win32":
        return windows_system_tool(name, lookup.environ) or name
    if name not in ("cmd.exe", "wslpath") or lookup.which(name) is not None:
        return name
    if name == "cmd.exe":
        found = find_cmd_exe(automount_root(lookup.wsl_conf_text()), lookup.exists)
    else:
        found = find_first(WSLPATH_CANDIDATES, lookup.exists)
    return found or name


def run_command_timed(
    argv: Sequence[str], *, timeout: float = COMMAND_TIMEOUT_SECONDS
) -> CommandResult | TimedOut | None:
    """Run `argv` with a time limit and capture its output; TimedOut when it gave no answer
    in time, None when it cannot be run. `argv[0]` is resolved by `resolve_program`."""
    if not argv:
        return None
    try:
        completed = subprocess.run(
            [resolve_program(argv[0]), *argv[1:]],
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
