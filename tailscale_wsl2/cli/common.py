"""What the commands share: their options, written once so that they stay the same, and the one
way an `ActionableError` reaches the user (one line on stderr, exit status 1; with `--verbose`
the traceback too). Help text goes in `help=`, never in docstrings: the frozen build strips
docstrings (-OO).

Paths are not checked by the command-line framework: typer would refuse a socket or key file
the user cannot read before any code runs ("Invalid value for '--socket'"), which is exactly
what doctor must report, with its fix, and what `up` says in one line of its own. So path
options are plain paths (`readable=False`; nothing else of click's checks is on), and the code
that uses a path says what is wrong with it. A malformed number is still usage (exit 2).
"""

import enum
import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.facts import LEGACY_LOCALAPI_HOST, LEGACY_LOCALAPI_PORT, PROGRAM

__all__ = [
    "HostIpOption",
    "InsecureOption",
    "KeyFileOption",
    "ListenOption",
    "PortOption",
    "SideChoice",
    "SideOption",
    "SocketOption",
    "UpstreamOption",
    "VerboseOption",
    "configure_logging",
    "run_reporting_errors",
]

T = TypeVar("T")


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
VerboseOption = Annotated[
    bool, typer.Option("--verbose", "-v", help="More detail; tracebacks of failures.")
]
