"""Finding the Windows host from inside WSL: resolv.conf, /proc/net/route, and the choice."""

from ipaddress import IPv4Address, IPv4Network, ip_address
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.net.endpoints import Discovered
from tailscale_wsl2.wsl import discovery
from tailscale_wsl2.wsl.discovery import (
    Candidate,
    DefaultRoute,
    choose_wsl_host,
    host_candidates,
    parse_default_route,
    parse_resolv_conf_nameservers,
    read_host_candidates,
    read_wsl_host,
)
from tailscale_wsl2.wsl.side import NetworkingMode, Side
from tests.support import FIXTURES as SUPPORT_FIXTURES

FIXTURES = SUPPORT_FIXTURES


def fixture(name: str) -> str:
    # read_bytes keeps the line ends exactly as stored.
    return (FIXTURES / name).read_bytes().decode("utf-8")


LOOPBACK_MIRRORED = Discovered("127.0.0.1", "mirrored networking: loopback")
GATEWAY = Discovered("172.27.64.1", "default route gateway in /proc/net/route")
AGREEING_NAMESERVER = Discovered(
    "172.27.64.1", "nameserver in /etc/resolv.conf (agrees with the default route)"
)
NAT_ROUTE = DefaultRoute(
    IPv4Address("172.27.64.1"), "eth0", IPv4Network("172.27.64.0/20"), metric=0
)


# --- resolv.conf ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "nameservers"),
    [
        ("wsl-generated.conf", ["172.27.64.1"]),
        ("dns-tunneling.conf", ["10.255.255.254"]),
        ("user-written.conf", ["1.1.1.1", "8.8.8.8", "2606:4700:4700::1111"]),
        ("systemd-resolved-stub.conf", ["127.0.0.53"]),
        ("empty.conf", []),
    ],
)
def test_nameservers_of_each_resolv_conf(name: str, nameservers: list[str]) -> None:
    text = fixture(f"resolv/{name}")
    assert parse_resolv_conf_nameservers(text) == nameservers
    assert parse_resolv_conf_nameservers(text.replace("\n", "\r\n")) == nameservers


def test_resolv_conf_oddities() -> None:
    text = (
        "; old-style comment\n"
        "#nameserver 9.9.9.9\n"
        "\n"
        "nameserver\n"
        "nameserver not-an-address\n"
        "nameserver 192.168.1.1 # the router\n"
        "\tnameserver 192.168.1.2\n"
        "nameserver fe80::1%eth0\n"
        "nameservers 10.0.0.1\n"
        "search nameserver 10.0.0.2\n"
    )
    assert parse_resolv_conf_nameservers(text) == ["192.168.1.1", "192.168.1.2", "fe80::1%eth0"]


@given(st.text())
def test_resolv_conf_parser_returns_only_addresses(text: str) -> None:
    for nameserver in parse_resolv_conf_nameservers(text):
        ip_address(nameserver)


@given(st.lists(st.builds("nameserver {}".format, st.one_of(st.ip_addresses(), st.text()))))
def test_resolv_conf_like_text_returns_only_addresses(lines: list[str]) -> None:
    for nameserver in parse_resolv_conf_nameservers("\n".join(lines)):
        ip_address(nameserver)


# --- /proc/net/route -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "route"),
    [
        ("nat.txt", NAT_ROUTE),
        (
            "mirrored.txt",
            DefaultRoute(
                IPv4Address("192.168.1.1"), "eth0", IPv4Network("192.168.1.0/24"), metric=25
            ),
        ),
        ("multiple-defaults.txt", NAT_ROUTE),
        ("no-default.txt", None),
    ],
)
def test_default_route_of_each_route_table(name: str, route: DefaultRoute | None) -> None:
    assert parse_default_route(fixture(f"route/{name}")) == route


def route_line(iface: str, destination: str, gateway: str, metric: int | str, mask: str) -> str:
    return f"{iface}\t{destination}\t{gateway}\t0003\t0\t0\t{metric}\t{mask}\t0\t0\t0"


HEADER = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT"


def test_lowest_metric_wins_wherever_it_is_listed() -> None:
    text = "\n".join(
        [
            HEADER,
            route_line("eth1", "00000000", "0132A8C0", 100, "00000000"),
            route_line("eth0", "00000000", "01087F0A", 5, "00000000"),
            route_line("eth2", "00000000", "0101A8C0", 5, "00000000"),
        ]
    )
    route = parse_default_route(text)
    assert route is not None
    assert (route.gateway, route.interface, route.metric) == (IPv4Address("10.127.8.1"), "eth0", 5)


def test_without_an_on_link_route_the_subnet_is_the_gateway_alone() -> None:
    text = "\n".join(
        [
            route_line("eth0", "00000000", "01087F0A", 0, "00000000"),
            route_line("eth1", "00007F0A", "00000000", 0, "0000FFFF"),  # another interface
            route_line("eth0", "0000A8C0", "00000000", 0, "0000FFFF"),  # gateway not inside
        ]
    )
    route = parse_default_route(text)
    assert route is not None
    assert route.subnet == IPv4Network("10.127.8.1/32")


def test_the_most_specific_on_link_route_is_the_subnet() -> None:
    text = "\n".join(
        [
            route_line("eth0", "00000000", "01087F0A", 0, "00000000"),
            route_line("eth0", "0000000A", "00000000", 0, "000000FF"),
            route_line("eth0", "00007F0A", "00000000", 0, "0000FFFF"),
        ]
    )
    route = parse_default_route(text)
    assert route is not None
    assert route.subnet == IPv4Network("10.127.0.0/16")


def test_an_on_link_default_route_is_not_the_gateways_subnet() -> None:
    # 0.0.0.0/0 without a gateway (a point-to-point or VPN interface) contains every address:
    # taken as the subnet, it would make any nameserver "agree" with the route.
    text = "\n".join(
        [
            HEADER,
            route_line("eth0", "00000000", "01087F0A", 5, "00000000"),
            route_line("eth0", "00000000", "00000000", 0, "00000000"),
        ]
    )
    route = parse_default_route(text)
    assert route is not None
    assert (route.gateway, route.subnet) == (
        IPv4Address("10.127.8.1"),
        IPv4Network("10.127.8.1/32"),
    )
    [_, nameserver, _] = host_candidates(
        side=Side.WSL2,
        mode=NetworkingMode.NAT,
        resolv_conf_text="nameserver 1.1.1.1\n",
        proc_net_route_text=text,
    )
    assert nameserver.rejected is not None
    assert "outside eth0's subnet 10.127.8.1/32" in nameserver.rejected


@pytest.mark.parametrize(
    "line",
    [
        route_line("eth0", "00000000", "00000000", 0, "00000000"),  # no gateway: point-to-point
        route_line("eth0", "00000001", "01087F0A", 0, "00000000"),  # host bits in destination
        route_line("eth0", "00000000", "0x087F0A", 0, "00000000"),
        route_line("eth0", "00000000", "01087F0A", -1, "00000000"),
        route_line("eth0", "00000000", "01087F0A", "²", "00000000"),  # int("²") fails
        "eth0\t00000000\t01087F0A\t0003",
    ],
)
def test_lines_that_are_no_default_route(line: str) -> None:
    assert parse_default_route(f"{HEADER}\n{line}\n") is None


@given(st.text())
def test_route_parser_never_crashes(text: str) -> None:
    route = parse_default_route(text)
    if route is not None:
        assert route.gateway in route.subnet


hex_words = st.one_of(
    st.integers(0, 2**32 - 1).map("{:08X}".format),
    st.sampled_from(["00000000", "FFFFFFFF", "00F0FFFF", "01401BAC"]),
    st.text(max_size=9),
)
route_lines = st.builds(
    route_line,
    st.sampled_from(["eth0", "eth1", "*"]),
    hex_words,
    hex_words,
    st.integers(0, 1000),
    hex_words,
)


@given(st.lists(route_lines))
def test_route_like_text_yields_a_consistent_route(lines: list[str]) -> None:
    route = parse_default_route("\n".join([HEADER, *lines]))
    if route is not None:
        assert not route.gateway.is_unspecified
        assert route.gateway in route.subnet
        assert route.metric >= 0


# --- choosing the host -----------------------------------------------------------------------


def choose(side: Side, mode: NetworkingMode, resolv: str | None, route: str | None) -> Discovered:
    return choose_wsl_host(
        side=side,
        mode=mode,
        resolv_conf_text=fixture(f"resolv/{resolv}") if resolv else None,
        proc_net_route_text=fixture(f"route/{route}") if route else None,
    )


@pytest.mark.parametrize("mode", list(NetworkingMode))
def test_wsl1_shares_the_windows_network_stack(mode: NetworkingMode) -> None:
    assert choose(Side.WSL1, mode, "wsl-generated.conf", "nat.txt") == Discovered(
        "127.0.0.1", "WSL1 shares the Windows network stack"
    )


def test_mirrored_networking_reaches_windows_on_loopback() -> None:
    found = choose(Side.WSL2, NetworkingMode.MIRRORED, "dns-tunneling.conf", "mirrored.txt")
    assert found == LOOPBACK_MIRRORED


@pytest.mark.parametrize("mode", [NetworkingMode.NAT, NetworkingMode.UNKNOWN])
def test_nat_uses_the_nameserver_that_agrees_with_the_route(mode: NetworkingMode) -> None:
    assert choose(Side.WSL2, mode, "wsl-generated.conf", "nat.txt") == AGREEING_NAMESERVER


@pytest.mark.parametrize(
    "resolv",
    [
        "dns-tunneling.conf",
        "user-written.conf",
        "systemd-resolved-stub.conf",
        "empty.conf",
        None,
    ],
)
@pytest.mark.parametrize("route", ["nat.txt", "multiple-defaults.txt"])
def test_nat_falls_back_to_the_gateway(resolv: str | None, route: str) -> None:
    for mode in (NetworkingMode.NAT, NetworkingMode.UNKNOWN):
        assert choose(Side.WSL2, mode, resolv, route) == GATEWAY


def test_candidates_under_dns_tunneling() -> None:
    assert host_candidates(
        side=Side.WSL2,
        mode=NetworkingMode.NAT,
        resolv_conf_text=fixture("resolv/dns-tunneling.conf"),
        proc_net_route_text=fixture("route/nat.txt"),
    ) == [
        Candidate(LOOPBACK_MIRRORED, "loopback reaches Windows only when mirrored"),
        Candidate(
            Discovered("10.255.255.254", "nameserver in /etc/resolv.conf"),
            "WSL's DNS tunneling resolver, not the host",
        ),
        Candidate(GATEWAY),
    ]


def test_candidates_with_a_users_own_resolv_conf() -> None:
    candidates = host_candidates(
        side=Side.WSL2,
        mode=NetworkingMode.NAT,
        resolv_conf_text=fixture("resolv/user-written.conf"),
        proc_net_route_text=fixture("route/nat.txt"),
    )
    assert [(c.found.address, c.rejected) for c in candidates[1:]] == [
        ("1.1.1.1", "outside eth0's subnet 172.27.64.0/20: not written by WSL's NAT"),
        ("8.8.8.8", "outside eth0's subnet 172.27.64.0/20: not written by WSL's NAT"),
        ("2606:4700:4700::1111", "outside eth0's subnet 172.27.64.0/20: not written by WSL's NAT"),
        ("172.27.64.1", None),
    ]


def test_candidates_under_mirrored_networking_show_the_unused_router() -> None:
    assert host_candidates(
        side=Side.WSL2,
        mode=NetworkingMode.MIRRORED,
        resolv_conf_text=None,
        proc_net_route_text=fixture("route/mirrored.txt"),
    ) == [
        Candidate(LOOPBACK_MIRRORED),
        Candidate(
            Discovered("192.168.1.1", "default route gateway in /proc/net/route"),
            "under mirrored networking the default gateway is the LAN router, not the host",
        ),
    ]


def test_the_tunneling_address_is_rejected_even_inside_the_subnet() -> None:
    route = route_line("eth0", "00000000", "01F0FF0A", 0, "00000000") + "\n"
    route += route_line("eth0", "00F0FF0A", "00000000", 0, "00F0FFFF")  # 10.255.240.0/20
    found = choose_wsl_host(
        side=Side.WSL2,
        mode=NetworkingMode.NAT,
        resolv_conf_text="nameserver 10.255.255.254\n",
        proc_net_route_text=route,
    )
    assert found == Discovered("10.255.240.1", "default route gateway in /proc/net/route")


@pytest.mark.parametrize("resolv", ["wsl-generated.conf", "empty.conf", None])
@pytest.mark.parametrize("route", ["no-default.txt", None])
def test_nat_without_a_default_route_is_actionable(resolv: str | None, route: str | None) -> None:
    # Even the WSL-generated nameserver is not trusted without a route to check it against.
    with pytest.raises(ActionableError) as raised:
        choose(Side.WSL2, NetworkingMode.NAT, resolv, route)
    assert raised.value.what == (
        "cannot find the Windows host's address: no default route in /proc/net/route"
    )
    assert raised.value.fix is not None
    assert "--host-ip" in raised.value.fix


@pytest.mark.parametrize(
    ("side", "mode", "reason"),
    [
        (Side.WSL2, NetworkingMode.OTHER, "the WSL networking mode is neither NAT nor mirrored"),
        (Side.LINUX, NetworkingMode.NAT, "not running inside WSL"),
        (Side.WINDOWS, NetworkingMode.UNKNOWN, "not running inside WSL"),
    ],
)
def test_no_automatic_answer_is_actionable(side: Side, mode: NetworkingMode, reason: str) -> None:
    with pytest.raises(ActionableError, match="--host-ip") as raised:
        choose(side, mode, "wsl-generated.conf", "nat.txt")
    assert raised.value.what == f"cannot find the Windows host's address: {reason}"


@given(
    st.sampled_from(Side),
    st.sampled_from(NetworkingMode),
    st.one_of(st.none(), st.text()),
    st.one_of(st.none(), st.text(), st.lists(route_lines).map("\n".join)),
)
def test_choice_is_an_address_or_actionable(
    side: Side, mode: NetworkingMode, resolv: str | None, route: str | None
) -> None:
    try:
        found = choose_wsl_host(
            side=side, mode=mode, resolv_conf_text=resolv, proc_net_route_text=route
        )
    except ActionableError:
        return
    ip_address(found.address)
    assert found.method


# --- reading the real files ------------------------------------------------------------------


@pytest.fixture
def network_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    resolv_conf, proc_net_route = tmp_path / "resolv.conf", tmp_path / "route"
    monkeypatch.setattr(discovery, "RESOLV_CONF", resolv_conf)
    monkeypatch.setattr(discovery, "PROC_NET_ROUTE", proc_net_route)
    return resolv_conf, proc_net_route


def test_read_wsl_host_reads_both_files(network_files: tuple[Path, Path]) -> None:
    resolv_conf, proc_net_route = network_files
    resolv_conf.write_text(fixture("resolv/wsl-generated.conf"))
    proc_net_route.write_text(fixture("route/nat.txt"))
    assert read_wsl_host(Side.WSL2, NetworkingMode.NAT) == AGREEING_NAMESERVER
    assert [c.found for c in read_host_candidates(Side.WSL2, NetworkingMode.NAT)] == [
        LOOPBACK_MIRRORED,
        AGREEING_NAMESERVER,
        GATEWAY,
    ]


def test_read_wsl_host_with_missing_files(network_files: tuple[Path, Path]) -> None:
    assert read_wsl_host(Side.WSL2, NetworkingMode.MIRRORED) == LOOPBACK_MIRRORED
    with pytest.raises(ActionableError, match="no default route"):
        read_wsl_host(Side.WSL2, NetworkingMode.NAT)


def test_a_route_line_needs_its_columns_up_to_the_mask_only() -> None:
    # Iface Destination Gateway Flags RefCnt Use Metric Mask: MTU, Window and IRTT are not read.
    line = "eth0\t00000000\t01087F0A\t0003\t0\t0\t7\t00000000"
    route = parse_default_route(f"{HEADER}\n{line}\n")
    assert route is not None
    assert (route.gateway, route.metric) == (IPv4Address("10.127.8.1"), 7)


def test_a_broad_on_link_route_still_counts_as_the_subnet() -> None:
    text = "\n".join(
        [
            route_line("eth0", "00000000", "01087F0A", 0, "00000000"),
            route_line("eth0", "00000000", "00000000", 0, "00000080"),  # 0.0.0.0/1
        ]
    )
    route = parse_default_route(text)
    assert route is not None
    assert route.subnet == IPv4Network("0.0.0.0/1")


def test_the_words_of_each_rejection() -> None:
    wsl1 = host_candidates(
        side=Side.WSL1,
        mode=NetworkingMode.NAT,
        resolv_conf_text="nameserver 172.27.64.1\n",
        proc_net_route_text=None,
    )
    assert [candidate.rejected for candidate in wsl1[1:]] == [
        "WSL1 has no NAT: it shares the Windows network stack"
    ]
    no_route = host_candidates(
        side=Side.WSL2,
        mode=NetworkingMode.NAT,
        resolv_conf_text="nameserver 172.27.64.1\n",
        proc_net_route_text=None,
    )
    assert [candidate.rejected for candidate in no_route[1:]] == [
        "no default route to check it against"
    ]
