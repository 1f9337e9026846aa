"""What the commands share, written once so that they stay the same: their options; the one way
an `ActionableError` reaches the user (one line on stderr, exit status 1; with `--verbose` the
traceback too); and the conventions every group follows, where click's and typer's defaults
miss them:

- `-h` as well as `--help` (`CONTEXT_SETTINGS`, inherited by every subcommand);
- a group called without a command prints its help on stdout, so that `| less` works, and
  exits 2 like any other bad usage (click prints it on stderr);
- shell completion with an optional shell name: typer's own `--show-completion` is a flag that
  always detects the shell, so `--show-completion zsh` typed in bash printed bash's script;
- colour only for a person at a terminal: never when piped, with `--no-color`, with `NO_COLOR`
  set (https://no-color.org) or `TERM=dumb`.

Paths are not checked by the command-line framework: typer would refuse a socket or key file
the user cannot read before any code runs ("Invalid value for '--socket'"), which is exactly
what doctor must report, with its fix, and what `up` says in one line of its own. So path
options are plain paths (`readable=False`; nothing else of click's checks is on), and the code
that uses a path says what is wrong with it. A malformed number is still usage (exit 2).

Help text goes in `help=`, never in docstrings: the frozen build strips docstrings (-OO).
"""

import enum
import logging
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, NoReturn, TextIO, TypeVar

import click
import typer

# typer's completion pieces, from the modules that define them (typer is pinned to 0.24.x):
# the scripts per shell, their installation, and the classes that answer them.
from typer._completion_classes import completion_init
from typer._completion_shared import get_completion_script, install
from typer.core import TyperGroup

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.facts import (
    DEFAULT_SOCKET_MODE,
    LEGACY_LOCALAPI_HOST,
    LEGACY_LOCALAPI_PORT,
    PROGRAM,
)

__all__ = [
    "COMPLETION_SHELLS",
    "CONTEXT_SETTINGS",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_SOCKET_MODE_TEXT",
    "EXIT_STATUS_HELP",
    "USAGE_ERROR",
    "HelpOnStdoutGroup",
    "HostIpOption",
    "InsecureOption",
    "KeyFileOption",
    "ListenOption",
    "MaxConnectionsOption",
    "NoColorOption",
    "PortOption",
    "ProgramGroup",
    "SideChoice",
    "SideOption",
    "SocketModeOption",
    "SocketOption",
    "UpstreamOption",
    "VerboseOption",
    "configure_logging",
    "run_reporting_errors",
    "wants_colour",
]

T = TypeVar("T")

# click's status for a usage error (UsageError.exit_code); a failure is 1 (`_fail`).
USAGE_ERROR = 2
EXIT_STATUS_HELP = "Exit status: 0 success, 1 failure, 2 bad usage."
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}
# The shells typer writes completion scripts for (pwsh: PowerShell 7, powershell: 5.1).
COMPLETION_SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")
# SetConsoleMode flag: the Windows console interprets ANSI escapes (Windows 10 1511 and later).
_ENABLE_VIRTUAL_TERMINAL_PROCESSING = 0x0004


class SideChoice(enum.StrEnum):
    windows = "windows"
    wsl = "wsl"


def _fail(exc: ActionableError, verbose: bool) -> NoReturn:
    if verbose:
        traceback.print_exc()
    typer.echo(f"{PROGRAM}: {exc}", err=True)
    raise typer.Exit(1)


def run_reporting_errors(verbose: bool, action: Callable[[], T]) -> T:
    """Run `action`; an ActionableError becomes one line and exit status 1."""
    try:
        return action()
    except ActionableError as exc:
        _fail(exc, verbose)


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


class HelpOnStdoutGroup(TyperGroup):
    """A group that, called without a command, prints its help on stdout and exits 2."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            typer.echo(ctx.get_help())
            ctx.exit(USAGE_ERROR)
        return super().parse_args(ctx, args)


def _detected_shell() -> str:
    import shellingham  # noqa: PLC0415 (only for completion)

    try:
        name, _path = shellingham.detect_shell()
    except (shellingham.ShellDetectionFailure, RuntimeError):
        name = ""
    if name not in COMPLETION_SHELLS:
        raise click.UsageError(
            f"cannot tell which shell this is ({name or 'not found'}): name it, e.g. "
            f"`{PROGRAM} --install-completion bash` ({', '.join(COMPLETION_SHELLS)})"
        )
    return str(name)


def _completion_shell(value: str) -> str:
    if not value:
        return _detected_shell()
    if value not in COMPLETION_SHELLS:
        raise click.BadParameter(f"{value!r} is not one of {', '.join(COMPLETION_SHELLS)}")
    return value


def _show_completion(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is None or ctx.resilient_parsing:
        return
    program = ctx.find_root().info_name or PROGRAM
    shell = _completion_shell(value)
    typer.echo(
        get_completion_script(prog_name=program, complete_var=_complete_var(program), shell=shell)
    )
    ctx.exit(0)


def _install_completion(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is None or ctx.resilient_parsing:
        return
    program = ctx.find_root().info_name or PROGRAM
    shell = _completion_shell(value)
    if shell in ("powershell", "pwsh"):
        # typer's installer would first set the user's execution policy to Unrestricted.
        _fail(
            ActionableError(
                "not installing PowerShell completion: typer's installer sets the execution "
                "policy to Unrestricted",
                f"add this line to your profile (notepad $PROFILE): "
                f"{program} --show-completion {shell} | Out-String | Invoke-Expression",
            ),
            verbose=False,
        )
    shell, path = install(shell, program, _complete_var(program))
    typer.echo(f"{shell} completion installed in {path}; it works in shells started from now on")
    ctx.exit(0)


def _complete_var(program: str) -> str:
    # The variable typer's runtime side reads (typer.core._main), named after the program.
    return f"_{program.replace('-', '_').upper()}_COMPLETE"


def _completion_option(
    name: str, callback: Callable[[click.Context, click.Parameter, str | None], None], help: str
) -> click.Option:
    # flag_value with is_flag=False: the shell name may follow the option or be left out.
    return click.Option(
        [name],
        metavar="[SHELL]",
        is_flag=False,
        flag_value="",
        expose_value=False,
        is_eager=True,
        callback=callback,
        help=help,
    )


class ProgramGroup(HelpOnStdoutGroup):
    """The top-level group: also `--install-completion` and `--show-completion`, shell optional."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        # typer's completion classes answer the scripts' requests (typer.core._main does that
        # on every start when the completion variable is set); add_completion would register them.
        completion_init()
        self.params += [
            _completion_option(
                "--install-completion",
                _install_completion,
                "Install completion for SHELL (default: this shell).",
            ),
            _completion_option(
                "--show-completion",
                _show_completion,
                "Print the completion script for SHELL (default: this shell).",
            ),
        ]


def wants_colour(no_color: bool, environ: Mapping[str, str], stream: TextIO) -> bool:
    """Colour for a person at a terminal only: not when piped, nor when told not to."""
    if no_color or environ.get("NO_COLOR") or environ.get("TERM") == "dumb":
        return False
    return stream.isatty() and _terminal_shows_colour(stream)


def _terminal_shows_colour(stream: TextIO) -> bool:
    if sys.platform != "win32":
        return True
    # Windows consoles show ANSI escapes only once a program asks for it (Python does not).
    import ctypes  # noqa: PLC0415
    import msvcrt  # noqa: PLC0415
    from ctypes import wintypes  # noqa: PLC0415

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    handle = msvcrt.get_osfhandle(stream.fileno())
    mode = wintypes.DWORD()
    if not kernel32.GetConsoleMode(handle, ctypes.byref(mode)):
        return False
    return bool(kernel32.SetConsoleMode(handle, mode.value | _ENABLE_VIRTUAL_TERMINAL_PROCESSING))


# Options `up` and `doctor` share, written once so that they stay the same.
SideOption = Annotated[
    SideChoice | None, typer.Option(help="Act as this half instead of the detected one.")
]
PortOption = Annotated[int, typer.Option(min=1, max=65535, help="TCP port of the Windows half.")]
ListenOption = Annotated[
    str | None,
    typer.Option(help="Windows half: listen on ADDR instead of the vEthernet (WSL) one."),
]
HostIpOption = Annotated[
    str | None,
    typer.Option(help="WSL2 half: the Windows host's address instead of discovering it."),
]
SocketOption = Annotated[
    Path,
    typer.Option(readable=False, help="WSL2 half: the Unix socket the `tailscale` CLI uses."),
]


def _parse_mode(text: str) -> str:
    """`--socket-mode` checked as it is parsed: a bad number is usage (exit 2), as for every
    other number option."""
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise typer.BadParameter(f"not an octal file mode: {text!r} (e.g. 0660)")
    return text


# A str, as given (`int(value, 8)` after parsing): its default reads as it is typed.
SocketModeOption = Annotated[
    str,
    typer.Option(callback=_parse_mode, help="WSL2 half: the socket's file mode, in octal."),
]
DEFAULT_SOCKET_MODE_TEXT = f"{DEFAULT_SOCKET_MODE:04o}"
DEFAULT_MAX_CONNECTIONS = 1024
MaxConnectionsOption = Annotated[
    int, typer.Option(min=1, help="Stop accepting past this many open connections.")
]
UpstreamOption = Annotated[
    str | None,
    typer.Option(
        help="The next hop: tcp:HOST:PORT, unix:PATH or npipe:NAME; auto (the default): on "
        f"Windows, Tailscale's named pipe, else {LEGACY_LOCALAPI_HOST}:{LEGACY_LOCALAPI_PORT}, "
        "chosen per connection."
    ),
]
KeyFileOption = Annotated[
    Path | None,
    typer.Option(
        readable=False, help="The link key file (default: found in the Windows user's profile)."
    ),
]
InsecureOption = Annotated[
    bool,
    typer.Option(
        "--insecure-no-auth",
        help="No link handshake (both sides); anyone reaching the port gets in.",
    ),
]
NoColorOption = Annotated[
    bool,
    typer.Option(
        "--no-color",
        help="No colour, even on a terminal (as with NO_COLOR set in the environment).",
    ),
]
VerboseOption = Annotated[
    bool, typer.Option("--verbose", "-v", help="More detail; tracebacks of failures.")
]
