"""The real system look-ups planning uses, wired once for `up` and doctor alike."""

import os
import sys
from functools import partial
from pathlib import Path

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.link.key import find_key_from_wsl, windows_key_path
from tailscale_wsl2.net.endpoints import Discovered
from tailscale_wsl2.plan.commands import distro_of_share
from tailscale_wsl2.plan.halves import Discoverers
from tailscale_wsl2.system import CommandResult, read_text_if_present, run_command_timed
from tailscale_wsl2.windows.adapters import list_adapters
from tailscale_wsl2.windows.ipconfig import WslAdapter, find_wsl_adapter
from tailscale_wsl2.windows.tools import wslconfig_networking_mode
from tailscale_wsl2.wsl.discovery import read_wsl_host
from tailscale_wsl2.wsl.side import Side, read_networking_mode

__all__ = ["system_discoverers"]


def _windows_adapter() -> WslAdapter | None:
    if sys.platform != "win32":
        raise ActionableError(
            "cannot find the vEthernet (WSL) adapter: ipconfig exists only on Windows",
            "pass --listen with the address to listen on",
        )
    return find_wsl_adapter(list_adapters(), found_in="the adapter list")


def _windows_networking_mode() -> tuple[str, str]:
    profile = os.environ.get("USERPROFILE")
    text = read_text_if_present(Path(profile) / ".wslconfig") if profile else None
    return wslconfig_networking_mode(text)


def _wsl_distro() -> str | None:
    # WSL's init answers this for any process of the distro, also where WSL_DISTRO_NAME is
    # not in the environment (it asks init's interop server; under systemd, /run/WSL/1_interop).
    answer = run_command_timed(["wslpath", "-w", "/"])
    if not isinstance(answer, CommandResult) or answer.returncode != 0:
        return None
    return distro_of_share(answer.output)


def _wsl_host_address(side: Side) -> Discovered:
    return read_wsl_host(side, read_networking_mode().mode)


def system_discoverers(side: Side) -> Discoverers:
    return Discoverers(
        windows_adapter=_windows_adapter,
        wsl_host_address=partial(_wsl_host_address, side),
        windows_key_file=partial(windows_key_path, os.environ),
        wsl_key_file=find_key_from_wsl,
        windows_networking_mode=_windows_networking_mode,
        wsl_distro=_wsl_distro,
    )
