"""Parsers for Windows tools' output (real samples) and the firewall rule decision."""

from ipaddress import IPv4Network

import pytest

from tailscale_wsl2.windows.firewall import firewall_add_command
from tailscale_wsl2.windows.firewall_rules import (
    parse_firewall_rules,
    rule_covers,
)
from tailscale_wsl2.windows.tools import (
    Listener,
    ServiceState,
    parse_netstat_listeners,
    parse_sc_query,
    parse_tasklist_image,
    wslconfig_networking_mode,
)
from tests.support import FIXTURES as SUPPORT_FIXTURES
from tests.support.netsh import rule_block

FIXTURES = SUPPORT_FIXTURES / "windows"
WSL_SUBNET = IPv4Network("172.27.64.0/20")


def fixture(name: str) -> str:
    return (FIXTURES / name).read_bytes().decode("utf-8")


@pytest.mark.parametrize(
    ("name", "state"),
    [
        ("sc-running.txt", ServiceState.RUNNING),
        ("sc-running-german.txt", ServiceState.RUNNING),
        ("sc-stopped.txt", ServiceState.STOPPED),
        ("sc-start-pending.txt", ServiceState.PENDING),
        ("sc-not-installed.txt", ServiceState.NOT_INSTALLED),
    ],
)
def test_sc_query(name: str, state: ServiceState) -> None:
    assert parse_sc_query(fixture(name)) is state


def test_sc_query_without_a_state() -> None:
    assert parse_sc_query("Access is denied.\r\n") is ServiceState.UNKNOWN


@pytest.mark.parametrize("name", ["netstat-ano.txt", "netstat-ano-german.txt"])
def test_netstat_listeners_by_layout_not_by_the_translated_state(name: str) -> None:
    assert parse_netstat_listeners(fixture(name)) == [
        Listener("0.0.0.0", 135, 1052),
        Listener("0.0.0.0", 445, 4),
        Listener("0.0.0.0", 5040, 6932),
        Listener("0.0.0.0", 49664, 924),
        Listener("127.0.0.1", 41112, 3312),
        Listener("172.27.64.1", 139, 4),
        Listener("172.27.64.1", 41113, 8124),
        Listener("192.168.178.42", 139, 4),
    ]


def test_netstat_ipv6_listener() -> None:
    line = "  TCP    [::]:41113             [::]:0                 LISTENING       8124\r\n"
    assert parse_netstat_listeners(line) == [Listener("::", 41113, 8124)]


@pytest.mark.parametrize(
    ("name", "image"),
    [
        ("tasklist-tailscale-wsl2.txt", "tailscale-wsl2.exe"),
        ("tasklist-svchost.txt", "svchost.exe"),
        ("tasklist-none.txt", None),
    ],
)
def test_tasklist_image(name: str, image: str | None) -> None:
    assert parse_tasklist_image(fixture(name)) == image


@pytest.mark.parametrize(
    ("text", "mode", "source"),
    [
        (None, "nat", "default: no .wslconfig"),
        ("wslconfig-mirrored.txt", "mirrored", ".wslconfig [wsl2] networkingMode"),
        ("wslconfig-no-mode.txt", "nat", "default: .wslconfig sets no [wsl2] networkingMode"),
        ("wslconfig-broken.txt", "nat", "default: .wslconfig is not readable (File contains"),
    ],
)
def test_wslconfig_networking_mode(text: str | None, mode: str, source: str) -> None:
    found_mode, found_source = wslconfig_networking_mode(fixture(text) if text else None)
    assert found_mode == mode
    assert found_source.startswith(source)


def test_parses_every_rule_of_a_real_listing() -> None:
    rules = parse_firewall_rules(fixture("netsh-rules.txt"))
    assert [rule.name for rule in rules] == [
        "Core Networking - Teredo (UDP-In)",
        "File and Printer Sharing (SMB-In)",
        "python.exe",
        "Remote Desktop - User Mode (TCP-In)",
        "Dev ports",
    ]
    python = rules[2]
    assert python.program == r"C:\users\me\appdata\local\programs\python\python312\python.exe"
    assert (python.enabled, python.action, python.local_port) == (True, "Block", "Any")
    assert not any(rule_covers(rule, 41113, WSL_SUBNET) for rule in rules)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"RemoteIP": "Any"},
        {"RemoteIP": "LocalSubnet"},
        {"RemoteIP": "172.16.0.0/12"},
        {"RemoteIP": "10.0.0.0/255.0.0.0,172.27.64.0-172.27.79.255"},
        {"LocalPort": "Any"},
        {"LocalPort": "80,41100-41200"},
        {"Protocol": "Any"},
        {"Profiles": "Public"},
        {"Program": r"C:\Tools\tailscale-wsl2.exe"},
        {"Program": "Any"},
    ],
)
def test_rules_that_cover_the_windows_half(fields: dict[str, str]) -> None:
    [rule] = parse_firewall_rules(rule_block(**fields))
    assert rule_covers(rule, 41113, WSL_SUBNET)


@pytest.mark.parametrize(
    "fields",
    [
        {"Enabled": "No"},
        {"Direction": "Out"},
        {"Profiles": "Domain,Private"},
        {"Protocol": "UDP"},
        {"LocalPort": "41112"},
        {"LocalPort": "RPC"},
        {"RemoteIP": "172.27.64.0/255.255.255.0"},  # only part of the WSL subnet
        {"RemoteIP": "172.27.70.15"},
        {"RemoteIP": "fe80::/64,Internet"},
        {"Program": r"C:\Python312\python.exe"},
        {"Service": "iphlpsvc"},
    ],
)
def test_rules_that_do_not(fields: dict[str, str]) -> None:
    [rule] = parse_firewall_rules(rule_block(**fields))
    assert not rule_covers(rule, 41113, WSL_SUBNET)


def test_the_add_command_carries_the_users_port_and_the_subnet() -> None:
    assert firewall_add_command(41113, WSL_SUBNET) == (
        "tailscale-wsl2.exe firewall add --subnet 172.27.64.0/20"
    )
    assert firewall_add_command(5000, None) == "tailscale-wsl2.exe firewall add --port 5000"


# --- edges the real samples do not show ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "state"),
    [
        # Only the first colon splits: a state word with a colon keeps its code.
        ("        STATE              : 4  RUNNING: (STOPPABLE)\r\n", ServiceState.RUNNING),
        # A STATE label without a code: something sc did not finish saying.
        ("        STATE              :\r\n", ServiceState.PENDING),
        # FAILED with another error than "no such service" is no answer about the service.
        ("[SC] OpenService FAILED 5:\r\n\r\nAccess is denied.\r\n", ServiceState.UNKNOWN),
        # 1060 alone (a PID, say) is not the error either.
        ("        PID                : 1060\r\n", ServiceState.UNKNOWN),
    ],
)
def test_sc_query_edges(text: str, state: ServiceState) -> None:
    assert parse_sc_query(text) is state


def test_netstat_lines_with_a_pid_that_is_no_number_are_passed_over() -> None:
    text = (
        "  TCP    0.0.0.0:135            0.0.0.0:0              LISTENING       -\r\n"
        "  UDP    0.0.0.0:5353           *:*                                    2420\r\n"
        "  TCP    0.0.0.0:445            0.0.0.0:0              LISTENING       4\r\n"
    )
    assert parse_netstat_listeners(text) == [Listener("0.0.0.0", 445, 4)]


def test_a_tasklist_row_of_only_image_and_pid() -> None:
    assert parse_tasklist_image('"tailscale-wsl2.exe","8124"\r\n') == "tailscale-wsl2.exe"


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        # Section names are matched without regard to case, as WSL does.
        ("[WSL2]\r\nnetworkingMode=mirrored\r\n", "mirrored"),
        ("[wsl2]\r\nnetworkingMode = Mirrored ; as the docs suggest\r\n", "mirrored"),
        ("[wsl2]\r\nnetworkingMode = mirrored # comment\r\n", "mirrored"),
        # A key given twice is no reason to ignore the file: the last one counts.
        ("[wsl2]\r\nnetworkingMode=nat\r\nnetworkingMode=mirrored\r\n", "mirrored"),
        ("[wsl2]\r\nmemory=4GB\r\n[wsl2]\r\nnetworkingMode=mirrored\r\n", "mirrored"),
    ],
)
def test_wslconfig_spellings(text: str, mode: str) -> None:
    assert wslconfig_networking_mode(text) == (mode, ".wslconfig [wsl2] networkingMode")
