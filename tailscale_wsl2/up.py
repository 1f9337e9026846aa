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
from .ipconfig import find_wsl_adapter, parse_ipconfig, read_ipconfig_output
from .side import Side, read_networking_mode, read_side

__all__ = ["start"]


def _windows_listen_address() -> Discovered:
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
    return adapter.found


def _wsl_host_address(side: Side) -> Discovered:
    return read_wsl_host(side, read_networking_mode().mode)


def start(
    *,
    side: HalfName | None,
    port: int,
    listen: str | None,
    host_ip: str | None,
    socket: Path,
    socket_mode: int,
    upstream: str | None,
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
    )
    detected = read_side()
    discoverers = Discoverers(
        windows_listen_address=_windows_listen_address,
        wsl_host_address=partial(_wsl_host_address, detected),
    )
    half = plan_half(options, detected, discoverers, os.environ)
    trio.run(partial(run_half, half, max_connections=max_connections))
