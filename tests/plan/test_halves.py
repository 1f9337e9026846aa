"""Planning a half: which side, which endpoints, found how (pure: no system access)."""

from dataclasses import replace
from ipaddress import IPv4Network, ip_network
from pathlib import Path
from typing import NoReturn

import pytest

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.net.connect import Hop
from tailscale_wsl2.net.endpoints import Discovered, TcpEndpoint, UnixEndpoint
from tailscale_wsl2.plan.halves import (
    Discoverers,
    ListenPlace,
    Options,
    WindowsHalf,
    WslHalf,
    parse_upstream_option,
    plan_half,
    socket_group,
)
from tailscale_wsl2.windows.ipconfig import WslAdapter
from tailscale_wsl2.windows.localapi import LocalApiAuto
from tailscale_wsl2.wsl.side import Side


def never() -> NoReturn:
    raise AssertionError("discovery must not run when an override is given")


WSL_NETWORK = IPv4Network("172.27.64.0/20")
ADAPTER = Discoverers(
    windows_adapter=lambda: WslAdapter(
        Discovered("172.27.64.1", "vEthernet (WSL) adapter"), WSL_NETWORK
    ),
    wsl_host_address=lambda: Discovered("172.27.64.1", "default route gateway"),
    windows_key_file=lambda: Path("C:/Users/me/AppData/Local/tailscale-wsl2/link.key"),
    wsl_key_file=lambda: Path("/mnt/c/Users/me/AppData/Local/tailscale-wsl2/link.key"),
)
OVERRIDDEN = Discoverers(
    windows_adapter=never, wsl_host_address=never, windows_key_file=never, wsl_key_file=never
)
KEY = Path("/tmp/link.key")
ADAPTER_PLACE = ListenPlace(
    TcpEndpoint("172.27.64.1", 41113), "vEthernet (WSL) adapter", WSL_NETWORK
)
LOOPBACK_NETWORK = ip_network("127.0.0.0/8")


def test_windows_follows_the_adapter_and_relays_to_the_localapi_found_per_connection() -> None:
    half = plan_half(Options(), Side.WINDOWS, ADAPTER, {})
    assert isinstance(half, WindowsHalf)
    assert half.fixed == ()
    assert half.adapter == ADAPTER_PLACE
    assert half.places() == (ADAPTER_PLACE,)
    assert half.follow_adapter
    assert not half.mirrored
    assert half.upstream == LocalApiAuto()
    assert half.key_file == Path("C:/Users/me/AppData/Local/tailscale-wsl2/link.key")


def test_wsl_relays_to_the_discovered_host_on_the_port() -> None:
    half = plan_half(Options(port=5000), Side.WSL2, ADAPTER, {})
    assert isinstance(half, WslHalf)
    assert half.upstream.endpoint == TcpEndpoint("172.27.64.1", 5000)
    assert half.upstream_found_by == "default route gateway"
    assert half.socket == Path("/var/run/tailscale/tailscaled.sock")
    assert half.socket_mode == 0o660
    assert half.key_file == Path("/mnt/c/Users/me/AppData/Local/tailscale-wsl2/link.key")


@pytest.mark.parametrize("detected", [Side.WSL1, Side.WSL2, Side.LINUX, Side.WINDOWS])
def test_side_option_wins_over_detection(detected: Side) -> None:
    options = Options(side="wsl", host_ip="10.0.0.1", key_file=KEY)
    assert isinstance(plan_half(options, detected, OVERRIDDEN, {}), WslHalf)
    options = Options(side="windows", listen="127.0.0.1", key_file=KEY)
    assert isinstance(plan_half(options, detected, OVERRIDDEN, {}), WindowsHalf)


def test_overrides_skip_discovery_and_say_so() -> None:
    windows = plan_half(Options(listen="127.0.0.1", key_file=KEY), Side.WINDOWS, OVERRIDDEN, {})
    assert isinstance(windows, WindowsHalf)
    assert [(p.endpoint, p.found_by) for p in windows.places()] == [
        (TcpEndpoint("127.0.0.1", 41113), "--listen")
    ]
    wsl = plan_half(Options(host_ip="172.20.0.1", key_file=KEY), Side.WSL2, OVERRIDDEN, {})
    assert isinstance(wsl, WslHalf)
    assert (wsl.upstream.endpoint, wsl.upstream_found_by) == (
        TcpEndpoint("172.20.0.1", 41113),
        "--host-ip",
    )


def test_upstream_option_replaces_the_next_hop() -> None:
    options = Options(listen="127.0.0.1", upstream=UnixEndpoint("/tmp/api.sock"), key_file=KEY)
    half = plan_half(options, Side.WINDOWS, OVERRIDDEN, {})
    assert isinstance(half.upstream, Hop)
    assert half.upstream.endpoint == UnixEndpoint("/tmp/api.sock")


def test_plain_linux_refuses_with_the_way_out() -> None:
    with pytest.raises(ActionableError, match=r"force a half with --side windows\|wsl$"):
        plan_half(Options(), Side.LINUX, ADAPTER, {})


def test_socket_group_comes_from_sudo() -> None:
    assert socket_group({"SUDO_GID": "1000"}) == 1000
    assert socket_group({}) is None
    assert socket_group({"SUDO_GID": "staff"}) is None
    half = plan_half(Options(), Side.WSL2, ADAPTER, {"SUDO_GID": "1000"})
    assert isinstance(half, WslHalf)
    assert half.socket_group == 1000


def test_loopback_listen_accepts_loopback_peers_only() -> None:
    half = plan_half(Options(listen="127.0.0.1", key_file=KEY), Side.WINDOWS, OVERRIDDEN, {})
    assert isinstance(half, WindowsHalf)
    assert [place.allowed_peers for place in half.places()] == [LOOPBACK_NETWORK]
    assert not half.follow_adapter


def test_listen_on_the_adapter_keeps_its_subnet() -> None:
    half = plan_half(Options(listen="172.27.64.1"), Side.WINDOWS, ADAPTER, {})
    assert isinstance(half, WindowsHalf)
    assert half.places() == (ListenPlace(ADAPTER_PLACE.endpoint, "--listen", WSL_NETWORK),)


def test_listen_outside_the_wsl_subnet_is_refused() -> None:
    with pytest.raises(ActionableError, match=r"^--listen 192\.168\.1\.5 is not on the WSL"):
        plan_half(Options(listen="192.168.1.5"), Side.WINDOWS, ADAPTER, {})


def test_insecure_no_auth_plans_no_key_on_either_side() -> None:
    options = Options(insecure_no_auth=True)
    assert plan_half(options, Side.WINDOWS, ADAPTER, {}).key_file is None
    assert plan_half(options, Side.WSL2, ADAPTER, {}).key_file is None


NO_ADAPTER_YET = replace(ADAPTER, windows_adapter=lambda: None)


def test_no_adapter_is_an_error_unless_asked_to_wait() -> None:
    with pytest.raises(ActionableError, match=r"^no vEthernet \(WSL\) adapter: WSL has not"):
        plan_half(Options(), Side.WINDOWS, NO_ADAPTER_YET, {})


def test_up_waits_for_the_adapter() -> None:
    half = plan_half(Options(wait_for_wsl=True), Side.WINDOWS, NO_ADAPTER_YET, {})
    assert isinstance(half, WindowsHalf)
    assert (half.places(), half.adapter, half.port) == ((), None, 41113)
    assert half.follow_adapter


def mirrored(discoverers: Discoverers) -> Discoverers:
    return replace(
        discoverers,
        windows_networking_mode=lambda: ("mirrored", ".wslconfig [wsl2] networkingMode"),
    )


MIRRORED_LOOPBACK = ListenPlace(
    TcpEndpoint("127.0.0.1", 41113),
    "mirrored networking (.wslconfig [wsl2] networkingMode): WSL2 comes in on loopback",
    LOOPBACK_NETWORK,
)


def test_mirrored_networking_listens_on_loopback_and_says_why() -> None:
    # No adapter (mirrored makes none), and not asked to wait: no error, loopback.
    half = plan_half(Options(key_file=KEY), Side.WINDOWS, mirrored(NO_ADAPTER_YET), {})
    assert isinstance(half, WindowsHalf)
    assert half.fixed == (MIRRORED_LOOPBACK,)
    assert half.places() == (MIRRORED_LOOPBACK,)
    assert half.mirrored
    # ...and it still follows the adapter, should WSL fall back to NAT later.
    assert half.follow_adapter


def test_mirrored_configured_but_fallen_back_to_nat_listens_on_both() -> None:
    # WSL made the adapter: mirrored could not run (IPv6 off, old kernel, Windows 10).
    half = plan_half(Options(key_file=KEY), Side.WINDOWS, mirrored(ADAPTER), {})
    assert isinstance(half, WindowsHalf)
    assert half.places() == (MIRRORED_LOOPBACK, ADAPTER_PLACE)
    assert half.follow_adapter


def test_nat_never_listens_on_loopback() -> None:
    # Loopback is for mirrored WSL only; under NAT nothing of WSL2 comes in there.
    half = plan_half(Options(key_file=KEY), Side.WINDOWS, ADAPTER, {})
    assert isinstance(half, WindowsHalf)
    assert [place.endpoint.host for place in half.places()] == ["172.27.64.1"]


def test_listen_wins_over_the_networking_mode() -> None:
    half = plan_half(Options(listen="172.27.64.1"), Side.WINDOWS, mirrored(ADAPTER), {})
    assert isinstance(half, WindowsHalf)
    assert [place.found_by for place in half.places()] == ["--listen"]
    assert not half.follow_adapter


# --- what the user reads: every refusal's words and fix, every hop's name ---------------------


def refusal(options: Options, side: Side, discover: Discoverers) -> tuple[str, str | None]:
    with pytest.raises(ActionableError) as raised:
        plan_half(options, side, discover, {})
    return raised.value.what, raised.value.fix


def test_the_words_of_plain_linuxs_refusal() -> None:
    assert refusal(Options(), Side.LINUX, ADAPTER) == (
        "this is neither Windows nor WSL: tailscale-wsl2 connects the `tailscale` CLI "
        "inside WSL2 to Tailscale on the Windows host",
        "run it on Windows and inside WSL2, or force a half with --side windows|wsl",
    )


def test_the_words_of_the_missing_adapter() -> None:
    assert refusal(Options(), Side.WINDOWS, NO_ADAPTER_YET) == (
        "no vEthernet (WSL) adapter: WSL has not started since Windows booted",
        "start WSL (e.g. run `wsl true`), then run this again, or pass --listen ADDR",
    )


def test_the_words_of_a_listen_address_off_the_subnet() -> None:
    assert refusal(Options(listen="192.168.1.5"), Side.WINDOWS, ADAPTER) == (
        "--listen 192.168.1.5 is not on the WSL adapter's subnet 172.27.64.0/20",
        "omit --listen, or listen on a loopback address",
    )


@pytest.mark.parametrize(
    ("options", "side", "flag"),
    [
        (Options(listen="localhost"), Side.WINDOWS, "--listen"),
        (Options(host_ip="host.internal"), Side.WSL2, "--host-ip"),
    ],
)
def test_the_words_of_an_address_option_that_is_no_address(
    options: Options, side: Side, flag: str
) -> None:
    value = options.listen or options.host_ip
    assert refusal(options, side, OVERRIDDEN) == (
        f"{flag}: not an IP address: {value!r}",
        f"pass an IPv4 address to {flag}",
    )


def test_each_next_hop_is_named_with_its_fix() -> None:
    wsl = plan_half(Options(), Side.WSL2, ADAPTER, {})
    assert isinstance(wsl, WslHalf)
    assert (wsl.upstream.name, wsl.upstream.fix) == (
        "the Windows half of tailscale-wsl2",
        "run `tailscale-wsl2.exe up` on Windows, then `tailscale-wsl2 doctor` here",
    )
    options = Options(upstream=UnixEndpoint("/tmp/api.sock"))
    windows = plan_half(options, Side.WINDOWS, ADAPTER, {})
    assert isinstance(windows.upstream, Hop)
    assert (windows.upstream.name, windows.upstream.fix) == (
        "Tailscale's LocalAPI on Windows",
        "is Tailscale running on Windows? Start it, then run "
        "`tailscale-wsl2.exe doctor --upstream unix:/tmp/api.sock` on Windows",
    )


def test_waiting_for_the_adapter_says_what_it_waits_for() -> None:
    half = plan_half(Options(wait_for_wsl=True), Side.WINDOWS, NO_ADAPTER_YET, {})
    assert isinstance(half, WindowsHalf)
    # Listening places now carry how they were found; while waiting there is none yet, and what
    # is awaited is the adapter (followed), not mirrored networking's loopback.
    assert (half.places(), half.adapter, half.follow_adapter, half.mirrored) == (
        (),
        None,
        True,
        False,
    )


def test_without_word_from_windows_the_networking_mode_is_nat() -> None:
    discover = Discoverers(never, never, never, never)
    assert discover.windows_networking_mode() == ("nat", "WSL's default")


def test_an_ipv6_loopback_listen_accepts_ipv6_loopback_peers_and_stays_put() -> None:
    half = plan_half(Options(listen="::1", key_file=KEY), Side.WINDOWS, OVERRIDDEN, {})
    assert isinstance(half, WindowsHalf)
    assert [place.allowed_peers for place in half.places()] == [ip_network("::1/128")]
    assert not half.follow_adapter  # a loopback address does not move with the adapter


@pytest.mark.parametrize("text", [None, "", "auto"])
def test_the_upstream_option_by_default(text: str | None) -> None:
    assert parse_upstream_option(text) is None


def test_the_upstream_option_names_an_endpoint_or_is_refused() -> None:
    assert parse_upstream_option("unix:/tmp/api.sock") == UnixEndpoint("/tmp/api.sock")
    with pytest.raises(ActionableError) as raised:
        parse_upstream_option("ftp:somewhere")
    assert raised.value.what.startswith("--upstream: ")
    assert raised.value.what != "--upstream: "


def test_the_wsl2_half_names_a_key_inside_its_distro_as_windows_reaches_it() -> None:
    options = Options(key_file=Path("/home/me/link.key"))
    half = plan_half(options, Side.WSL2, ADAPTER, {"WSL_DISTRO_NAME": "Ubuntu"})
    assert isinstance(half, WslHalf)
    assert half.fixes.windows_up == (
        'tailscale-wsl2.exe up --key-file "\\\\wsl$\\Ubuntu\\home\\me\\link.key"'
    )
    assert half.key_file == Path("/home/me/link.key")  # the WSL2 half's own name for it


def test_under_sudo_or_as_a_service_the_distro_s_name_comes_from_wsl_itself() -> None:
    options = Options(key_file=Path("/home/me/link.key"))
    asks_wsl = replace(ADAPTER, wsl_distro=lambda: "Ubuntu 24.04")
    half = plan_half(options, Side.WSL2, asks_wsl, {"SUDO_UID": "1000"})  # no WSL_DISTRO_NAME
    assert isinstance(half, WslHalf)
    assert half.fixes.windows_up == (
        'tailscale-wsl2.exe up --key-file "\\\\wsl$\\Ubuntu 24.04\\home\\me\\link.key"'
    )


@pytest.mark.parametrize(
    ("options", "environ", "windows_up"),
    [
        (Options(), {}, "tailscale-wsl2.exe up"),  # the key in the Windows profile
        (
            Options(key_file=Path("/mnt/c/keys/link.key")),
            {},
            "tailscale-wsl2.exe up --key-file C:\\keys\\link.key",
        ),
        (
            Options(key_file=Path("/home/me/link.key")),
            {"WSL_DISTRO_NAME": "Ubuntu"},
            'tailscale-wsl2.exe up --key-file "\\\\wsl$\\Ubuntu\\home\\me\\link.key"',
        ),
    ],
)
def test_wsl_is_asked_for_the_distro_only_when_a_fix_needs_it(
    options: Options, environ: dict[str, str], windows_up: str
) -> None:
    def not_asked() -> str | None:
        raise AssertionError("wslpath was run")

    half = plan_half(options, Side.WSL2, replace(ADAPTER, wsl_distro=not_asked), environ)
    assert isinstance(half, WslHalf)
    assert half.fixes.windows_up == windows_up
