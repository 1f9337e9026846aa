"""`tailscale-wsl2 up`: wire the real system look-ups into planning, then run."""

import os
import sys
from functools import partial
from ipaddress import IPv4Network
from pathlib import Path

import trio

from ._windows_adapters import list_adapters
from .discovery import Discovered, read_wsl_host
from .errors import ActionableError
from .halves import (
    Discoverers,
    Options,
    WindowsLookups,
    plan_half,
    run_half,
)
from .ipconfig import WslAdapter, find_wsl_adapter
from .linkkey import find_key_from_wsl, windows_key_path
from .side import Side, read_networking_mode, read_side, read_text_if_present

__all__ = ["start", "system_discoverers", "windows_lookups"]


def _windows_adapter() -> WslAdapter | None:
    if sys.platform != "win32":
        raise ActionableError(
            "cannot find the vEthernet (WSL) adapter: ipconfig exists only on Windows",
            "pass --listen with the address to listen on",
        )
    return find_wsl_adapter(list_adapters(), found_in="the adapter list")


def _windows_networking_mode() -> tuple[str, str]:
    # The doctor package imports this module, so its parser is imported when needed.
    from .doctor.windows_tools import wslconfig_networking_mode  # noqa: PLC0415

    profile = os.environ.get("USERPROFILE")
    text = read_text_if_present(Path(profile) / ".wslconfig") if profile else None
    return wslconfig_networking_mode(text)


def _wsl_host_address(side: Side) -> Discovered:
    return read_wsl_host(side, read_networking_mode().mode)


def system_discoverers(side: Side) -> Discoverers:
    return Discoverers(
        windows_adapter=_windows_adapter,
        wsl_host_address=partial(_wsl_host_address, side),
        windows_key_file=partial(windows_key_path, os.environ),
        wsl_key_file=find_key_from_wsl,
        windows_networking_mode=_windows_networking_mode,
    )


def _firewall_warning(port: int, subnet: IPv4Network) -> str | None:
    # firewall.py reuses doctor's rule parser; the doctor package imports this module.
    from .doctor.system import run_command  # noqa: PLC0415
    from .firewall import RuleSpec, firewall_warning, this_program  # noqa: PLC0415

    return firewall_warning(RuleSpec(port, subnet, this_program()), run_command)


def windows_lookups() -> WindowsLookups:
    return WindowsLookups(list_adapters=list_adapters, firewall_warning=_firewall_warning)


def start(options: Options, *, max_connections: int) -> None:
    """Plan the half for this system and run it until Ctrl+C or SIGTERM."""
    detected = read_side()
    half = plan_half(options, detected, system_discoverers(detected), os.environ)
    trio.run(partial(run_half, half, max_connections=max_connections, windows=windows_lookups()))
