"""How the WSL half finds the Windows host, and the result type every discovery shares.

Each method yields a candidate address: the loopback address (WSL1 shares the Windows network
stack; mirrored networking forwards 127.0.0.1 to Windows), the nameservers in /etc/resolv.conf,
and the default route's gateway in /proc/net/route. A candidate is either usable or carries the
reason it is not, so `doctor` can show every method's answer next to the chosen one, and
`choose_wsl_host` is nothing but "the first usable candidate".

In NAT mode the default gateway is the host's vEthernet (WSL) address. The nameserver is the
same address only while WSL writes resolv.conf without DNS tunneling: tunneling puts
10.255.255.254 there, and with generateResolvConf=false the file is the user's own (1.1.1.1,
8.8.8.8, 127.0.0.53, ...). So a nameserver counts only where it lies in the subnet of the default
route's interface, that is where it agrees with the route.

Parsers take text and never touch the system; `read_*` functions do the reading.
"""

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_address
from pathlib import Path

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.net.endpoints import Discovered
from tailscale_wsl2.system import read_text_if_present
from tailscale_wsl2.wsl.side import NetworkingMode, Side

__all__ = [
    "Candidate",
    "DefaultRoute",
    "Discovered",
    "choose_wsl_host",
    "host_candidates",
    "parse_default_route",
    "parse_resolv_conf_nameservers",
    "read_host_candidates",
    "read_wsl_host",
]

RESOLV_CONF = Path("/etc/resolv.conf")
PROC_NET_ROUTE = Path("/proc/net/route")

LOOPBACK = "127.0.0.1"  # mirrored networking forwards IPv4 loopback only, not ::1
DNS_TUNNELING_NAMESERVER = IPv4Address("10.255.255.254")

WSL1_METHOD = "WSL1 shares the Windows network stack"
MIRRORED_METHOD = "mirrored networking: loopback"
GATEWAY_METHOD = "default route gateway in /proc/net/route"
NAMESERVER_METHOD = "nameserver in /etc/resolv.conf"
AGREEING_NAMESERVER_METHOD = "nameserver in /etc/resolv.conf (agrees with the default route)"
HOST_IP_FIX = "pass --host-ip with the Windows host's vEthernet (WSL) address (see `ipconfig`)"


@dataclass(frozen=True)
class Candidate:
    """One method's answer; `rejected` says why it is not used, None where it is usable."""

    found: Discovered
    rejected: str | None = None


@dataclass(frozen=True)
class DefaultRoute:
    """The default route: its gateway, interface, and the interface's subnet around the gateway.

    `subnet` is the most specific on-link route of the interface that contains the gateway, or
    the gateway alone (/32) where there is none.
    """

    gateway: IPv4Address
    interface: str
    subnet: IPv4Network
    metric: int


def parse_resolv_conf_nameservers(text: str) -> list[str]:
    """The `nameserver` addresses in resolv.conf text, IPv4 and IPv6, in file order.

    Comments (`#`, `;`), other keywords and unparsable addresses are skipped; a trailing
    comment or CR after the address is tolerated.
    """
    nameservers = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                nameservers.append(str(ip_address(words[1])))
            except ValueError:
                continue
    return nameservers


@dataclass(frozen=True)
class _Route:
    interface: str
    network: IPv4Network
    gateway: IPv4Address
    metric: int


_HEX_WORD = re.compile(r"[0-9A-Fa-f]{8}")
_DECIMAL = re.compile(r"[0-9]+")


def _kernel_hex_address(field: str) -> IPv4Address | None:
    # The kernel prints each network-order address with %08X as a host integer, so on the
    # little-endian machines WSL runs on (x86-64, arm64) the bytes come out reversed:
    # `01087F0A` is 10.127.8.1.
    if not _HEX_WORD.fullmatch(field):
        return None
    return IPv4Address(bytes.fromhex(field)[::-1])


def _parse_route_line(line: str) -> _Route | None:
    # Columns: Iface Destination Gateway Flags RefCnt Use Metric Mask MTU Window IRTT,
    # tab-separated and padded with spaces; the header line fails the hex test.
    fields = line.split()
    if len(fields) < 8:
        return None
    interface, destination, gateway, metric, mask = (fields[i] for i in (0, 1, 2, 6, 7))
    destination_address = _kernel_hex_address(destination)
    gateway_address = _kernel_hex_address(gateway)
    mask_address = _kernel_hex_address(mask)
    if (
        destination_address is None
        or gateway_address is None
        or mask_address is None
        or not _DECIMAL.fullmatch(metric)
    ):
        return None
    try:
        network = IPv4Network(f"{destination_address}/{mask_address}")
    except ValueError:
        return None
    return _Route(interface, network, gateway_address, int(metric))


def _gateway_subnet(routes: list[_Route], default: _Route) -> IPv4Network:
    on_link = [
        route.network
        for route in routes
        if route.interface == default.interface
        and route.gateway.is_unspecified
        and route.network.prefixlen > 0
        and default.gateway in route.network
    ]
    return max(on_link, key=lambda network: network.prefixlen, default=IPv4Network(default.gateway))


def parse_default_route(proc_net_route_text: str) -> DefaultRoute | None:
    """The default route with the lowest metric (the first listed on a tie), or None."""
    routes = [
        route for line in proc_net_route_text.splitlines() if (route := _parse_route_line(line))
    ]
    defaults = [
        route
        for route in routes
        if route.network.prefixlen == 0 and not route.gateway.is_unspecified
    ]
    if not defaults:
        return None
    best = min(defaults, key=lambda route: route.metric)
    return DefaultRoute(best.gateway, best.interface, _gateway_subnet(routes, best), best.metric)


def _nat_rejection(side: Side, mode: NetworkingMode) -> str | None:
    """Why the NAT methods (nameserver, gateway) do not apply here; None where they do.

    An UNKNOWN mode counts as NAT, WSL2's default.
    """
    if side is Side.WSL1:
        return "WSL1 has no NAT: it shares the Windows network stack"
    if side is not Side.WSL2:
        return "not running inside WSL"
    if mode is NetworkingMode.MIRRORED:
        return "under mirrored networking the default gateway is the LAN router, not the host"
    if mode is NetworkingMode.OTHER:
        return "the WSL networking mode is neither NAT nor mirrored"
    return None


def _loopback_candidate(side: Side, mode: NetworkingMode) -> Candidate:
    if side is Side.WSL1:
        return Candidate(Discovered(LOOPBACK, WSL1_METHOD))
    if side is Side.WSL2 and mode is NetworkingMode.MIRRORED:
        return Candidate(Discovered(LOOPBACK, MIRRORED_METHOD))
    return Candidate(
        Discovered(LOOPBACK, MIRRORED_METHOD), "loopback reaches Windows only when mirrored"
    )


def _nameserver_rejection(nameserver: str, route: DefaultRoute | None) -> str | None:
    address = ip_address(nameserver)
    if address == DNS_TUNNELING_NAMESERVER:
        return "WSL's DNS tunneling resolver, not the host"
    if route is None:
        return "no default route to check it against"
    if address not in route.subnet:
        return f"outside {route.interface}'s subnet {route.subnet}: not written by WSL's NAT"
    return None


def _nameserver_candidate(
    nameserver: str, route: DefaultRoute | None, nat_rejection: str | None
) -> Candidate:
    rejected = nat_rejection or _nameserver_rejection(nameserver, route)
    method = NAMESERVER_METHOD if rejected else AGREEING_NAMESERVER_METHOD
    return Candidate(Discovered(nameserver, method), rejected)


def host_candidates(
    *,
    side: Side,
    mode: NetworkingMode,
    resolv_conf_text: str | None,
    proc_net_route_text: str | None,
) -> list[Candidate]:
    """Every method's answer for the Windows host's address, in order of preference.

    Order: loopback, each nameserver, the default gateway. Loopback is usable only where the
    NAT methods are not, so the order matters only between a nameserver and the gateway.
    """
    route = parse_default_route(proc_net_route_text or "")
    nat_rejection = _nat_rejection(side, mode)
    candidates = [_loopback_candidate(side, mode)]
    candidates += [
        _nameserver_candidate(nameserver, route, nat_rejection)
        for nameserver in parse_resolv_conf_nameservers(resolv_conf_text or "")
    ]
    if route is not None:
        candidates.append(Candidate(Discovered(str(route.gateway), GATEWAY_METHOD), nat_rejection))
    return candidates


def _first_usable(candidates: list[Candidate], side: Side, mode: NetworkingMode) -> Discovered:
    for candidate in candidates:
        if candidate.rejected is None:
            return candidate.found
    # Where the NAT methods apply, only a missing default route leaves nothing usable.
    reason = _nat_rejection(side, mode) or "no default route in /proc/net/route"
    raise ActionableError(f"cannot find the Windows host's address: {reason}", HOST_IP_FIX)


def choose_wsl_host(
    *,
    side: Side,
    mode: NetworkingMode,
    resolv_conf_text: str | None,
    proc_net_route_text: str | None,
) -> Discovered:
    """The Windows host's address as seen from WSL: the first usable candidate.

    Raises ActionableError where none is usable: outside WSL, under a networking mode that is
    neither NAT nor mirrored, or in NAT mode without a default route.
    """
    candidates = host_candidates(
        side=side,
        mode=mode,
        resolv_conf_text=resolv_conf_text,
        proc_net_route_text=proc_net_route_text,
    )
    return _first_usable(candidates, side, mode)


def read_host_candidates(side: Side, mode: NetworkingMode) -> list[Candidate]:
    """`host_candidates` for this system's /etc/resolv.conf and /proc/net/route."""
    return host_candidates(
        side=side,
        mode=mode,
        resolv_conf_text=read_text_if_present(RESOLV_CONF),
        proc_net_route_text=read_text_if_present(PROC_NET_ROUTE),
    )


def read_wsl_host(side: Side, mode: NetworkingMode) -> Discovered:
    """`choose_wsl_host` for this system's /etc/resolv.conf and /proc/net/route."""
    return _first_usable(read_host_candidates(side, mode), side, mode)
