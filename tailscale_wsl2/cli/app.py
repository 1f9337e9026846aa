"""The command line: thin typer commands over the library.

Each command turns its options into values, calls library code, and lets the
one error family, `ActionableError`, become a single line on stderr with exit
status 1 (with `--verbose`, the traceback too). Any other exception is a bug
and keeps its traceback. Heavy imports (trio) happen inside the commands so
that `--version` starts fast.
"""

from typing import TYPE_CHECKING, Annotated, Any

import typer

from tailscale_wsl2 import __version__
from tailscale_wsl2.cli.common import (
    HostIpOption,
    InsecureOption,
    KeyFileOption,
    ListenOption,
    PortOption,
    SideChoice,
    SideOption,
    SocketOption,
    UpstreamOption,
    VerboseOption,
    configure_logging,
    run_reporting_errors,
)
from tailscale_wsl2.cli.firewall import firewall_app
from tailscale_wsl2.facts import DEFAULT_PORT, DEFAULT_SOCKET, PROGRAM
from tailscale_wsl2.tuning.deferred_ssl import defer_ssl

if TYPE_CHECKING:
    from tailscale_wsl2.plan.halves import Options

__all__ = ["app", "main"]


# Help text goes in `help=`, never in docstrings: the frozen build strips docstrings (-OO).
app = typer.Typer(
    name=PROGRAM,
    help="Use the Windows host's Tailscale from inside WSL2.",
    add_completion=False,
    no_args_is_help=True,
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


def _options(side: "SideChoice | None", upstream: str | None, **given: Any) -> "Options":
    """The planning options of `up` and `doctor` from their command-line values."""
    from tailscale_wsl2.plan.halves import Options, parse_upstream_option  # noqa: PLC0415

    return Options(
        side=side.value if side else None, upstream=parse_upstream_option(upstream), **given
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


@app.command(help="Print the program's version and the platform it detected.")
def version() -> None:
    typer.echo(_version_line())


@app.command(help="Run the relay half for this side in the foreground (Ctrl+C stops it).")
def up(
    side: SideOption = None,
    port: PortOption = DEFAULT_PORT,
    listen: ListenOption = None,
    host_ip: HostIpOption = None,
    socket: SocketOption = DEFAULT_SOCKET,
    socket_mode: Annotated[
        str,
        typer.Option(callback=_parse_mode, help="WSL2 half: the socket's file mode, in octal."),
    ] = "0660",
    upstream: UpstreamOption = None,
    key_file: KeyFileOption = None,
    insecure_no_auth: InsecureOption = False,
    max_connections: Annotated[
        int, typer.Option(min=1, help="Stop accepting past this many open connections.")
    ] = 1024,
    verbose: VerboseOption = False,
) -> None:
    configure_logging(verbose)
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
        ),
    )


@app.command(
    help="Find the broken hop between `tailscale` in WSL2 and Tailscale on Windows, and its fix."
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
        ),
    )
    raise typer.Exit(status)


app.add_typer(firewall_app)


def main() -> None:
    # Before anything imports trio: OpenSSL stays unloaded (tuning/deferred_ssl.py).
    defer_ssl()
    app(prog_name=PROGRAM)
