"""Planning a half: the command line's options and what discovery found, as a plain value.

`plan_half` turns options and look-ups into a `WindowsHalf` or `WslHalf` (pure: tests cover
every combination with canned look-ups); `serve` runs what it returns, and doctor checks it,
so both see exactly the same plan.

The Windows half listens on one of three kinds of address: the one given with `--listen`;
127.0.0.1 under mirrored networking (WSL2 reaches Windows through loopback there, and no
vEthernet (WSL) adapter exists); or, by default, the vEthernet (WSL) adapter's, followed as WSL
creates and re-creates it. It relays to Tailscale's LocalAPI wherever the installed Tailscale
serves it (`windows.localapi`) unless `--upstream` names a place.
"""

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.facts import DEFAULT_PORT, DEFAULT_SOCKET, DEFAULT_SOCKET_MODE
from tailscale_wsl2.link.mismatch import LinkFixes
from tailscale_wsl2.net.connect import Hop
from tailscale_wsl2.net.endpoints import (
    Discovered,
    Endpoint,
    IPNetwork,
    TcpEndpoint,
    parse_endpoint,
    parse_ip,
)
from tailscale_wsl2.plan.commands import link_fixes, windows_doctor_command
from tailscale_wsl2.windows.ipconfig import WslAdapter
from tailscale_wsl2.windows.localapi import LocalApiAuto
from tailscale_wsl2.wsl.discovery import LOOPBACK
from tailscale_wsl2.wsl.side import Side

__all__ = [
    "Discoverers",
    "Half",
    "HalfName",
    "Options",
    "WindowsHalf",
    "WslHalf",
    "half_for",
    "parse_upstream_option",
    "plan_half",
    "socket_group",
]


HalfName = Literal["windows", "wsl"]


@dataclass(frozen=True)
class Options:
    """What the user asked for on the command line (None: discover it)."""

    side: HalfName | None = None
    port: int = DEFAULT_PORT
    listen: str | None = None
    host_ip: str | None = None
    socket: Path = DEFAULT_SOCKET
    socket_mode: int = DEFAULT_SOCKET_MODE
    upstream: Endpoint | None = None
    key_file: Path | None = None
    insecure_no_auth: bool = False
    # `up` waits for the vEthernet (WSL) adapter when WSL has not started yet; doctor reports it.
    wait_for_wsl: bool = False


@dataclass(frozen=True)
class WindowsHalf:
    # listen and allowed_peers are None while the WSL adapter does not exist (wait_for_wsl).
    listen: TcpEndpoint | None
    listen_found_by: str
    allowed_peers: IPNetwork | None
    upstream: Hop | LocalApiAuto
    key_file: Path | None  # None: --insecure-no-auth
    port: int
    follow_adapter: bool  # rebind as the vEthernet (WSL) adapter comes, goes and moves


@dataclass(frozen=True)
class WslHalf:
    socket: Path
    socket_mode: int
    socket_group: int | None
    upstream: Hop
    upstream_found_by: str
    key_file: Path | None  # None: --insecure-no-auth
    fixes: LinkFixes  # the commands its messages name, with the options it was given


Half = WindowsHalf | WslHalf


def _nat_unless_told() -> tuple[str, str]:
    return "nat", "WSL's default"


@dataclass(frozen=True)
class Discoverers:
    """The system look-ups planning may need; tests pass canned answers."""

    windows_adapter: Callable[[], WslAdapter | None]  # None: WSL has not started since boot
    wsl_host_address: Callable[[], Discovered]
    windows_key_file: Callable[[], Path]
    wsl_key_file: Callable[[], Path]
    # The WSL networking mode as Windows configures it (.wslconfig), and where that came from.
    windows_networking_mode: Callable[[], tuple[str, str]] = _nat_unless_told


def parse_upstream_option(text: str | None) -> Endpoint | None:
    """`--upstream`: None for the default ("auto": discovered, or on Windows decided
    per connection), else the endpoint it names."""
    if not text or text == "auto":
        return None
    try:
        return parse_endpoint(text)
    except ValueError as exc:
        raise ActionableError(f"--upstream: {exc}") from None


def half_for(options: Options, side: Side) -> HalfName:
    if options.side is not None:
        return options.side
    if side is Side.WINDOWS:
        return "windows"
    if side in (Side.WSL2, Side.WSL1):
        return "wsl"
    raise ActionableError(
        "this is neither Windows nor WSL: tailscale-wsl2 connects the `tailscale` CLI "
        "inside WSL2 to Tailscale on the Windows host",
        "run it on Windows and inside WSL2, or force a half with --side windows|wsl",
    )


def socket_group(environ: Mapping[str, str]) -> int | None:
    """The invoking user's group under sudo, so they can use the socket unprivileged."""
    gid = environ.get("SUDO_GID", "")
    return int(gid) if gid.isdigit() else None


def _override(value: str, flag: str) -> Discovered:
    try:
        return Discovered(parse_ip(value), flag)
    except ValueError as exc:
        raise ActionableError(f"{flag}: {exc}", f"pass an IPv4 address to {flag}") from None


def _no_wsl_adapter() -> ActionableError:
    return ActionableError(
        "no vEthernet (WSL) adapter: WSL has not started since Windows booted",
        "start WSL (e.g. run `wsl true`), then run this again, or pass --listen ADDR",
    )


def _wsl_adapter(discover: Discoverers) -> WslAdapter:
    adapter = discover.windows_adapter()
    if adapter is None:
        raise _no_wsl_adapter()
    return adapter


def _loopback_peers(address: str) -> IPNetwork:
    version = ipaddress.ip_address(address).version
    return ipaddress.ip_network("127.0.0.0/8" if version == 4 else "::1/128")


# Where the Windows half listens, the peers it accepts, and whether it follows the adapter.
WindowsListen = tuple[Discovered | None, IPNetwork | None, bool]


def _listen_given(listen: str, discover: Discoverers) -> WindowsListen:
    found = _override(listen, "--listen")
    address = ipaddress.ip_address(found.address)
    if address.is_loopback:  # mirrored networking, or a test
        return found, _loopback_peers(found.address), False
    adapter = _wsl_adapter(discover)
    if address not in adapter.network:
        raise ActionableError(
            f"--listen {address} is not on the WSL adapter's subnet {adapter.network}",
            "omit --listen, or listen on a loopback address",
        )
    return found, adapter.network, False


def _windows_listen(options: Options, discover: Discoverers) -> WindowsListen:
    if options.listen:
        return _listen_given(options.listen, discover)
    mode, source = discover.windows_networking_mode()
    if mode == "mirrored":
        # No NAT adapter exists; mirrored WSL2 reaches Windows services on 127.0.0.1.
        found = Discovered(LOOPBACK, f"mirrored networking ({source}): WSL2 comes in on loopback")
        return found, _loopback_peers(LOOPBACK), False
    adapter = discover.windows_adapter()
    if adapter is None:
        if not options.wait_for_wsl:
            raise _no_wsl_adapter()
        return None, None, True
    return adapter.found, adapter.network, True


def _key_file(options: Options, default: Callable[[], Path]) -> Path | None:
    if options.insecure_no_auth:
        return None
    return options.key_file or default()


def _windows_upstream(options: Options) -> Hop | LocalApiAuto:
    if options.upstream is None:
        return LocalApiAuto()
    doctor = windows_doctor_command(options, from_wsl=False)
    return Hop(
        options.upstream,
        "Tailscale's LocalAPI on Windows",
        f"is Tailscale running on Windows? Start it, then run `{doctor}` on Windows",
    )


def plan_half(
    options: Options, side: Side, discover: Discoverers, environ: Mapping[str, str]
) -> Half:
    if half_for(options, side) == "windows":
        found, allowed_peers, follow_adapter = _windows_listen(options, discover)
        return WindowsHalf(
            listen=TcpEndpoint(found.address, options.port) if found else None,
            listen_found_by=found.method
            if found
            else "the vEthernet (WSL) adapter, once WSL starts",
            allowed_peers=allowed_peers,
            upstream=_windows_upstream(options),
            key_file=_key_file(options, discover.windows_key_file),
            port=options.port,
            follow_adapter=follow_adapter,
        )
    found = (
        _override(options.host_ip, "--host-ip") if options.host_ip else discover.wsl_host_address()
    )
    # Under sudo, so its fixes name sudo too (`sudo tailscale-wsl2 up ...`).
    fixes = link_fixes(options, sudo="SUDO_UID" in environ)
    return WslHalf(
        socket=options.socket,
        socket_mode=options.socket_mode,
        socket_group=socket_group(environ),
        upstream=Hop(
            options.upstream or TcpEndpoint(found.address, options.port),
            "the Windows half of tailscale-wsl2",
            f"run `{fixes.windows_up}` on Windows, then `{fixes.doctor}` here",
        ),
        upstream_found_by=found.method,
        key_file=_key_file(options, discover.wsl_key_file),
        fixes=fixes,
    )
