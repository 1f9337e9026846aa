"""The command line: thin typer commands over the library.

Each command turns its options into values, calls library code, and lets the
one error family, `ActionableError`, become a single line on stderr with exit
status 1 (with `--verbose`, the traceback too). Any other exception is a bug
and keeps its traceback. A value that cannot be parsed is bad usage, exit status
2, as click reports it. Heavy imports (trio) happen inside the commands so
that `--version` starts fast. The conventions every command follows (`-h`,
completion, help on stdout, colour) are in `common.py`.
"""

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tailscale_wsl2 import __version__
from tailscale_wsl2.cli.common import (
    CONTEXT_SETTINGS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_SOCKET_MODE_TEXT,
    EXIT_STATUS_HELP,
    HostIpOption,
    InsecureOption,
    KeyFileOption,
    ListenOption,
    MaxConnectionsOption,
    NoColorOption,
    PortOption,
    ProgramGroup,
    SideChoice,
    SideOption,
    SocketModeOption,
    SocketOption,
    UpstreamOption,
    VerboseOption,
    run_reporting_errors,
    wants_colour,
)
from tailscale_wsl2.cli.firewall import firewall_app
from tailscale_wsl2.cli.service import LogFileOption, register, start_logging
from tailscale_wsl2.facts import DEFAULT_PORT, DEFAULT_SOCKET, PROGRAM
from tailscale_wsl2.tuning.deferred_ssl import defer_ssl

if TYPE_CHECKING:
    from tailscale_wsl2.plan.halves import Options

__all__ = ["app", "main"]


# Help text goes in `help=`, never in docstrings: the frozen build strips docstrings (-OO).
# A command's `short_help` is its line in the listing: it must fit an 80-column terminal whole.
app = typer.Typer(
    name=PROGRAM,
    cls=ProgramGroup,
    help="Use the Windows host's Tailscale from inside WSL2.",
    epilog=EXIT_STATUS_HELP,
    context_settings=CONTEXT_SETTINGS,
    # ProgramGroup adds the completion options, taking an optional shell name.
    add_completion=False,
    no_args_is_help=True,
    # click (8.4+) suggests a close command name itself; typer's would repeat it.
    suggest_commands=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version_line() -> str:
    from tailscale_wsl2.wsl.side import read_side  # noqa: PLC0415

    return f"{PROGRAM} {__version__} (detected: {read_side().value})"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(_version_line())
        raise typer.Exit


def _options(
    side: "SideChoice | None", upstream: str | None, key_file: Path | None, **given: Any
) -> "Options":
    """The planning options of `up` and `doctor` from their command-line values."""
    from tailscale_wsl2.plan.halves import Options, parse_upstream_option  # noqa: PLC0415

    return Options(
        side=side.value if side else None,
        upstream=parse_upstream_option(upstream),
        # Absolute: the commands that fixes print run elsewhere, the Windows half's on Windows.
        key_file=key_file.absolute() if key_file else None,
        **given,
    )


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    # Only here to give the program its eager --version option; the commands do the work.
    pass


def _command_line_after_the_executable() -> tuple[str, ...]:
    """What `status` shows after `sys.executable`, and `install` recognises its own copy by: a
    frozen binary is the program itself; a Python runs `-m tailscale_wsl2` or a console
    script, which belongs to the command line too."""
    return tuple(sys.argv[1:] if getattr(sys, "frozen", False) else sys.orig_argv[1:])


@app.command(
    help="Print the program's version and the platform it detected.",
    short_help="Print the version and the detected platform.",
)
def version() -> None:
    typer.echo(_version_line())


@app.command(
    help="Run the relay half for this side in the foreground (Ctrl+C stops it).",
    short_help="Run this side's relay half in the foreground.",
)
def up(
    side: SideOption = None,
    port: PortOption = DEFAULT_PORT,
    listen: ListenOption = None,
    host_ip: HostIpOption = None,
    socket: SocketOption = DEFAULT_SOCKET,
    socket_mode: SocketModeOption = DEFAULT_SOCKET_MODE_TEXT,
    upstream: UpstreamOption = None,
    key_file: KeyFileOption = None,
    insecure_no_auth: InsecureOption = False,
    max_connections: MaxConnectionsOption = DEFAULT_MAX_CONNECTIONS,
    log_file: LogFileOption = None,
    verbose: VerboseOption = False,
) -> None:
    run_reporting_errors(verbose, lambda: start_logging(verbose, log_file))
    from tailscale_wsl2.serve.up import start  # noqa: PLC0415 (imports trio)

    run_reporting_errors(
        verbose,
        lambda: start(
            _options(
                side,
                upstream,
                port=port,
                listen=listen,
                host_ip=host_ip,
                socket=socket,
                socket_mode=int(socket_mode, 8),
                key_file=key_file,
                insecure_no_auth=insecure_no_auth,
                wait_for_wsl=True,
            ),
            max_connections=max_connections,
            arguments=_command_line_after_the_executable(),
            log_file=str(log_file.absolute()) if log_file else None,
        ),
    )


@app.command(
    help="Find the broken hop between `tailscale` in WSL2 and Tailscale on Windows, and its fix.",
    short_help="Find the broken hop, and say how to fix it.",
)
def doctor(
    side: SideOption = None,
    port: PortOption = DEFAULT_PORT,
    listen: ListenOption = None,
    host_ip: HostIpOption = None,
    socket: SocketOption = DEFAULT_SOCKET,
    upstream: UpstreamOption = None,
    key_file: KeyFileOption = None,
    insecure_no_auth: InsecureOption = False,
    timeout: Annotated[
        float, typer.Option(min=0.01, help="Seconds each network probe may take.")
    ] = 2.0,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the results as one JSON document.")
    ] = False,
    no_color: NoColorOption = False,
    verbose: VerboseOption = False,
) -> None:
    from tailscale_wsl2.doctor import run_doctor  # noqa: PLC0415 (imports trio)

    status = run_reporting_errors(
        verbose,
        lambda: run_doctor(
            _options(
                side,
                upstream,
                port=port,
                listen=listen,
                host_ip=host_ip,
                socket=socket,
                key_file=key_file,
                insecure_no_auth=insecure_no_auth,
            ),
            timeout=timeout,
            as_json=json_output,
            verbose=verbose,
            colour=wants_colour(no_color, os.environ, sys.stdout),
        ),
    )
    raise typer.Exit(status)


app.add_typer(firewall_app)
register(app)  # install, uninstall, status, logs (cli/service.py)


def main() -> None:
    # Before anything imports trio: OpenSSL stays unloaded (tuning/deferred_ssl.py).
    defer_ssl()
    app(prog_name=PROGRAM)
