"""`tailscale-wsl2 up`: plan the half for this system with the real look-ups, then run it."""

import os
from functools import partial
from ipaddress import IPv4Network

import trio

from tailscale_wsl2.plan.halves import Options, plan_half
from tailscale_wsl2.plan.lookups import system_discoverers
from tailscale_wsl2.serve.halves import WindowsLookups, prepare_half, run_half
from tailscale_wsl2.system import run_command
from tailscale_wsl2.windows.adapters import list_adapters
from tailscale_wsl2.windows.firewall import RuleSpec, firewall_warning, this_program
from tailscale_wsl2.wsl.side import read_side

__all__ = ["start", "windows_lookups"]


def _firewall_warning(port: int, subnet: IPv4Network) -> str | None:
    return firewall_warning(RuleSpec(port, subnet, this_program()), run_command)


def windows_lookups() -> WindowsLookups:
    return WindowsLookups(list_adapters=list_adapters, firewall_warning=_firewall_warning)


def start(options: Options, *, max_connections: int) -> None:
    """Plan the half for this system and run it until Ctrl+C or SIGTERM."""
    detected = read_side()
    half = plan_half(options, detected, system_discoverers(detected), os.environ)
    key = prepare_half(half)  # before the event loop, whose signal handling it would defeat
    trio.run(
        partial(run_half, half, key=key, max_connections=max_connections, windows=windows_lookups())
    )
