"""`tailscale-wsl2 up`: plan the half for this system with the real look-ups, then run it,
keeping the state file `status` reads (serve/state.py)."""

import os
import sys
from functools import partial
from ipaddress import IPv4Network

import trio

from tailscale_wsl2.plan.halves import Half, HalfName, Options, WindowsHalf, plan_half
from tailscale_wsl2.plan.lookups import system_discoverers
from tailscale_wsl2.serve.halves import WindowsLookups, prepare_half, run_half
from tailscale_wsl2.serve.state import StateReporter, initial_state, state_path
from tailscale_wsl2.windows.adapters import list_adapters
from tailscale_wsl2.windows.firewall import (
    RuleSpec,
    firewall_warning,
    read_firewall_here,
    running_image,
    this_program,
)
from tailscale_wsl2.wsl.side import read_side

__all__ = ["start", "windows_lookups"]


def _firewall_warning(port: int, subnet: IPv4Network) -> str | None:
    spec = RuleSpec(port, subnet, this_program())
    return firewall_warning(spec, running_image(), read_firewall_here())


def windows_lookups() -> WindowsLookups:
    return WindowsLookups(list_adapters=list_adapters, firewall_warning=_firewall_warning)


def _reporter(half: Half, arguments: tuple[str, ...], log_file: str | None) -> StateReporter:
    name: HalfName = "windows" if isinstance(half, WindowsHalf) else "wsl"
    euid = os.geteuid() if hasattr(os, "geteuid") else None
    path = state_path(name, platform=sys.platform, environ=os.environ, euid=euid)
    return StateReporter(path, initial_state(name, arguments, log_file))


def start(
    options: Options,
    *,
    max_connections: int,
    arguments: tuple[str, ...] = (),
    log_file: str | None = None,
) -> None:
    """Plan the half for this system and run it until Ctrl+C or SIGTERM. `arguments` (the
    command line) and `log_file` are what `status` shows of it."""
    detected = read_side()
    half = plan_half(options, detected, system_discoverers(detected), os.environ)
    key = prepare_half(half)  # before the event loop, whose signal handling it would defeat
    run = partial(
        run_half,
        half,
        key=key,
        max_connections=max_connections,
        windows=windows_lookups(),
        report=_reporter(half, arguments, log_file),
    )
    trio.run(run)
