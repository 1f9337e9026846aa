"""Planning a half: the command line's options and what discovery found, as a plain value.

`plan_half` turns options and look-ups into a `WindowsHalf` or `WslHalf` (pure: tests cover
every combination with canned look-ups); `serve` runs what it returns, and doctor checks it,
so both see exactly the same plan.

Where the Windows half listens: with `--listen`, there and only there. Otherwise on the
vEthernet (WSL) adapter whenever it exists, followed as WSL creates and re-creates it; and,
when `.wslconfig` configures mirrored networking, on 127.0.0.1 as well (WSL2 reaches Windows
through loopback there). Both, because the configuration is not what runs: WSL falls back to
NAT when mirrored networking cannot run (IPv6 disabled, an old kernel, Windows 10), and then
creates the adapter; listening on both serves WSL2 whichever way it comes in, and never waits
for an adapter mirrored networking does not make. It relays to Tailscale's LocalAPI wherever
the installed Tailscale serves it (`windows.localapi`) unless `--upstream` names a place.
"""

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.facts import (
    DEFAULT_PORT,
    DEFAULT_SOCKET,
    DEFAULT_SOCKET_MODE,
    DISTRO_NAME_VARIABLE,
)
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
from tailscale_wsl2.plan.commands import link_fixes, windows_doctor_command, windows_drive_path
from tailscale_wsl2.windows.ipconfig import WslAdapter
from tailscale_wsl2.windows.localapi import LocalApiAuto
from tailscale_wsl2.wsl.discovery import LOOPBACK
from tailscale_wsl2.wsl.side import Side

__all__ = [
    "Discoverers",
    "Half",
    "HalfName",
    "ListenPlace",
    "Options",
    "WindowsHalf",
    "WslHalf",
    "distro_for_fixes",
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
class ListenPlace:
    """One address the Windows half listens on, how it was found, and the peers it admits."""

    endpoint: TcpEndpoint
    found_by: str
    allowed_peers: IPNetwork


@dataclass(frozen=True)
class WindowsHalf:
    # Bound at start, for the whole run: --listen's address, or loopback (mirrored networking).
    fixed: tuple[ListenPlace, ...]
    # The vEthernet (WSL) adapter's place as planning found it; None while WSL has not made it.
    adapter: ListenPlace | None
    follow_adapter: bool  # listen on the adapter too, and rebind as it comes, goes and moves
    mirrored: bool  # .wslconfig configures mirrored networking (not asked with --listen)
    upstream: Hop | LocalApiAuto
    key_file: Path | None  # None: --insecure-no-auth
    port: int

    def places(self) -> tuple[ListenPlace, ...]:
        """Where it listens now (as planned): the fixed places, then the adapter's."""
        return self.fixed + ((self.adapter,) if self.adapter and self.follow_adapter else ())


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


def _distro_unknown() -> str | None:
    return None


@dataclass(frozen=True)
class Discoverers:
    """The system look-ups planning may need; tests pass canned answers."""

    windows_adapter: Callable[[], WslAdapter | None]  # None: WSL has not started since boot
    wsl_host_address: Callable[[], Discovered]
    windows_key_file: Callable[[], Path]
    wsl_key_file: Callable[[], Path]
    # The WSL networking mode as Windows configures it (.wslconfig), and where that came from.
    windows_networking_mode: Callable[[], tuple[str, str]] = _nat_unless_told
    # This distro's name as WSL itself gives it (`wslpath -w /`), None if it cannot.
    wsl_distro: Callable[[], str | None] = _distro_unknown


def distro_for_fixes(
    options: Options, environ: Mapping[str, str], discover: Discoverers
) -> str | None:
    """The distro's name, for fixes that name a key file inside it to Windows (None when
    none does): from the environment WSL gives its sessions, else from WSL itself, as under
    sudo or in a service, whose environments do not carry it."""
    key_file = options.key_file
    if key_file is None or windows_drive_path(key_file) is not None:
        return None
    return environ.get(DISTRO_NAME_VARIABLE) or discover.wsl_distro()


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


def _listen_given(listen: str, port: int, discover: Discoverers) -> ListenPlace:
    found = _override(listen, "--listen")
    endpoint = TcpEndpoint(found.address, port)
    address = ipaddress.ip_address(found.address)
    if address.is_loopback:  # mirrored networking, or a test
        return ListenPlace(endpoint, found.method, _loopback_peers(found.address))
    adapter = _wsl_adapter(discover)
    if address not in adapter.network:
        raise ActionableError(
            f"--listen {address} is not on the WSL adapter's subnet {adapter.network}",
            "omit --listen, or listen on a loopback address",
        )
    return ListenPlace(endpoint, found.method, adapter.network)


def _adapter_place(adapter: WslAdapter | None, port: int) -> ListenPlace | None:
    if adapter is None:
        return None
    return ListenPlace(
        TcpEndpoint(adapter.found.address, port), adapter.found.method, adapter.network
    )


def _mirrored_loopback(port: int, source: str) -> ListenPlace:
    return ListenPlace(
        TcpEndpoint(LOOPBACK, port),
        f"mirrored networking ({source}): WSL2 comes in on loopback",
        _loopback_peers(LOOPBACK),
    )


# The Windows half's places: fixed ones, the adapter's now, following it, mirrored configured.
WindowsPlaces = tuple[tuple[ListenPlace, ...], ListenPlace | None, bool, bool]


def _windows_places(options: Options, discover: Discoverers) -> WindowsPlaces:
    port = options.port
    if options.listen:  # there and only there, whatever WSL does
        return (_listen_given(options.listen, port, discover),), None, False, False
    mode, source = discover.windows_networking_mode()
    adapter = discover.windows_adapter()
    if mode == "mirrored":
        # The adapter exists only if WSL fell back to NAT: listen there too, never wait for it.
        return (_mirrored_loopback(port, source),), _adapter_place(adapter, port), True, True
    if adapter is None and not options.wait_for_wsl:
        raise _no_wsl_adapter()
    return (), _adapter_place(adapter, port), True, False


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
        fixed, adapter, follow_adapter, mirrored = _windows_places(options, discover)
        return WindowsHalf(
            fixed=fixed,
            adapter=adapter,
            follow_adapter=follow_adapter,
            mirrored=mirrored,
            upstream=_windows_upstream(options),
            key_file=_key_file(options, discover.windows_key_file),
            port=options.port,
        )
    found = (
        _override(options.host_ip, "--host-ip") if options.host_ip else discover.wsl_host_address()
    )
    # Under sudo, so its fixes name sudo too (`sudo tailscale-wsl2 up ...`).
    fixes = link_fixes(
        options, sudo="SUDO_UID" in environ, distro=distro_for_fixes(options, environ, discover)
    )
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
