"""`tailscale-wsl2 up`: wire the real system look-ups into planning, then run."""

import os
import sys
from functools import partial
from pathlib import Path

import trio

from .discovery import Discovered, read_wsl_host
from .endpoints import parse_endpoint
from .errors import ActionableError
from .halves import Discoverers, HalfName, Options, plan_half, run_half
from .ipconfig import WslAdapter, find_wsl_adapter, parse_ipconfig, read_ipconfig_output
from .linkkey import find_key_from_wsl, windows_key_path
from .side import Side, read_networking_mode, read_side

__all__ = ["start", "system_discoverers"]


def _windows_adapter() -> WslAdapter:
    if sys.platform != "win32":
        raise ActionableError(
            "cannot find the vEthernet (WSL) adapter: ipconfig exists only on Windows",
            "pass --listen with the address to listen on",
        )
    adapter = find_wsl_adapter(parse_ipconfig(read_ipconfig_output()))
    if adapter is None:
        raise ActionableError(
            "no vEthernet (WSL) adapter: WSL has not started since Windows booted",
            "start WSL (e.g. run `wsl true`), then run this again, or pass --listen ADDR",
        )
    return adapter


def _wsl_host_address(side: Side) -> Discovered:
    return read_wsl_host(side, read_networking_mode().mode)


def system_discoverers(side: Side) -> Discoverers:
    return Discoverers(
        windows_adapter=_windows_adapter,
        wsl_host_address=partial(_wsl_host_address, side),
        windows_key_file=partial(windows_key_path, os.environ),
        wsl_key_file=find_key_from_wsl,
    )


def start(
    *,
    side: HalfName | None,
    port: int,
    listen: str | None,
    host_ip: str | None,
    socket: Path,
    socket_mode: int,
    upstream: str | None,
    key_file: Path | None,
    insecure_no_auth: bool,
    max_connections: int,
) -> None:
    try:
        upstream_endpoint = parse_endpoint(upstream) if upstream else None
    except ValueError as exc:
        raise ActionableError(f"--upstream: {exc}") from None
    options = Options(
        side=side,
        port=port,
        listen=listen,
        host_ip=host_ip,
        socket=socket,
        socket_mode=socket_mode,
        upstream=upstream_endpoint,
        key_file=key_file,
        insecure_no_auth=insecure_no_auth,
    )
    detected = read_side()
    half = plan_half(options, detected, system_discoverers(detected), os.environ)
    trio.run(partial(run_half, half, max_connections=max_connections))
