"""`tailscale-wsl2 firewall add|remove|show`: the Windows Defender Firewall rule for the link.

Thin typer commands over `firewall.py`, in the manner of cli.py: options become values, the
library does the work, an ActionableError becomes one line. The WSL subnet defaults to the
vEthernet (WSL) adapter's, found as `up` finds it. Heavy imports happen inside the commands.
"""

import os
import sys
from collections.abc import Callable, Sequence
from ipaddress import IPv4Network
from typing import TYPE_CHECKING, Annotated

import typer

from tailscale_wsl2.cli.common import (
    HelpOnStdoutGroup,
    PortOption,
    VerboseOption,
    run_reporting_errors,
)
from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.facts import DEFAULT_PORT

if TYPE_CHECKING:
    from tailscale_wsl2.windows.firewall import Consent, FirewallSystem
    from tailscale_wsl2.windows.firewall_rules import FirewallRule

__all__ = ["firewall_app"]

# Help text in `help=`, as in cli.py: the frozen build strips docstrings.
firewall_app = typer.Typer(
    name="firewall",
    cls=HelpOnStdoutGroup,
    help="Windows: the firewall rule that lets WSL2 reach the Windows half.",
    short_help="Windows: the firewall rule for WSL2's link.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _windows_only() -> None:
    if sys.platform != "win32":
        raise ActionableError(
            "firewall commands are for Windows",
            "run `tailscale-wsl2.exe firewall ...` in Windows (PowerShell or cmd)",
        )


def _subnet(text: str | None) -> IPv4Network:
    if text:
        try:
            return IPv4Network(text, strict=False)
        except ValueError as exc:
            raise ActionableError(f"--subnet: {exc}", "e.g. --subnet 172.27.64.0/20") from None
    from tailscale_wsl2.windows.adapters import list_adapters  # noqa: PLC0415
    from tailscale_wsl2.windows.ipconfig import find_wsl_adapter  # noqa: PLC0415

    adapter = find_wsl_adapter(list_adapters())
    if adapter is None:
        raise ActionableError(
            "no vEthernet (WSL) adapter to take the WSL subnet from: WSL has not started",
            "start WSL (e.g. run `wsl true`), or pass --subnet",
        )
    return adapter.network


def _system() -> "FirewallSystem":
    from tailscale_wsl2.system import run_command  # noqa: PLC0415
    from tailscale_wsl2.windows.elevation import is_admin, run_elevated  # noqa: PLC0415 (Windows only)
    from tailscale_wsl2.windows.firewall import (  # noqa: PLC0415
        FirewallSystem,
        read_firewall_here,
        running_image,
    )

    return FirewallSystem(
        run=run_command,
        is_admin=is_admin,
        run_elevated=run_elevated,
        read=read_firewall_here,
        image=running_image(),
        environ=os.environ,
    )


def _consent(remove_blocking: bool) -> "Consent":
    """Never silent: --remove-blocking consents in advance; otherwise the user is asked, and
    without a terminal to ask on the answer is no (the error then names the flag)."""

    def ask(rules: Sequence["FirewallRule"]) -> bool:
        if remove_blocking:
            return True
        if not sys.stdin.isatty():
            return False
        names = ", ".join(f"{rule.name!r} ({rule.program})" for rule in rules)
        return typer.confirm(
            f"Windows' firewall prompt left Block rules for this program that beat the new "
            f"rule: {names}. Remove them?",
            default=False,
        )

    return ask


def _report(verbose: bool, action: Callable[["FirewallSystem"], str]) -> None:
    """Run `action` on Windows' firewall and print its one-line outcome (or the error)."""

    def on_windows() -> str:
        _windows_only()
        return action(_system())

    typer.echo(run_reporting_errors(verbose, on_windows))


@firewall_app.command(
    help="Allow TCP PORT in from the WSL subnet (adds the rule, or updates it in place).",
    short_help="Allow TCP PORT in from the WSL subnet.",
)
def add(
    port: PortOption = DEFAULT_PORT,
    subnet: Annotated[
        str | None,
        typer.Option(help="The WSL subnet (default: the vEthernet (WSL) adapter's)."),
    ] = None,
    remove_blocking: Annotated[
        bool,
        typer.Option(
            "--remove-blocking",
            help="Remove, without asking, the Block rules Windows' firewall prompt left for "
            "this program (they beat the new rule).",
        ),
    ] = False,
    verbose: VerboseOption = False,
) -> None:

    def add_rule(system: "FirewallSystem") -> str:
        from tailscale_wsl2.windows.firewall import RuleSpec, add_or_update_rule, this_program  # noqa: PLC0415

        spec = RuleSpec(port, _subnet(subnet), this_program())
        return add_or_update_rule(spec, system, _consent(remove_blocking))

    _report(verbose, add_rule)


@firewall_app.command(help="Delete the rule.")
def remove(verbose: VerboseOption = False) -> None:
    from tailscale_wsl2.windows.firewall import remove_rule  # noqa: PLC0415

    _report(verbose, remove_rule)


@firewall_app.command(help="Print the rule as netsh shows it.")
def show(verbose: VerboseOption = False) -> None:
    from tailscale_wsl2.windows.firewall import show_rule  # noqa: PLC0415

    _report(verbose, show_rule)
