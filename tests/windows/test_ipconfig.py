"""Parsing `ipconfig` output in several languages, and finding the WSL adapter in it."""

import sys
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.net.endpoints import Discovered
from tailscale_wsl2.system import CommandResult, oem_codec
from tailscale_wsl2.windows.ipconfig import (
    AdapterAddress,
    WslAdapter,
    find_wsl_adapter,
    parse_ipconfig,
    read_ipconfig_output,
)
from tests.support import FIXTURES as SUPPORT_FIXTURES

FIXTURES = SUPPORT_FIXTURES / "ipconfig"


def fixture(name: str) -> str:
    # read_bytes keeps the CRLF line ends that read_text would translate.
    return (FIXTURES / name).read_bytes().decode("utf-8")


EXPECTED = {
    "english.txt": [
        AdapterAddress("Tailscale", "100.101.102.103", 32),
        AdapterAddress("Ethernet", "192.168.178.42", 24),
        AdapterAddress("Wi-Fi", "10.0.0.57", 24),
        AdapterAddress("vEthernet (WSL)", "172.27.64.1", 20),
    ],
    "german-all.txt": [
        AdapterAddress("Ethernet", "192.168.178.42", 24),
        AdapterAddress("vEthernet (WSL (Hyper-V firewall))", "172.22.16.1", 20),
    ],
    "french.txt": [
        AdapterAddress("Ethernet", "192.168.1.20", 24),
        AdapterAddress("vEthernet (WSL (Hyper-V firewall))", "172.23.48.1", 20),
    ],
    "spanish.txt": [
        AdapterAddress("Ethernet", "192.168.0.105", 24),
        AdapterAddress("vEthernet (WSL)", "172.29.96.1", 20),
    ],
    "japanese.txt": [
        AdapterAddress("イーサネット", "192.168.10.8", 24),
        AdapterAddress("vEthernet (WSL)", "172.26.128.1", 20),
    ],
    "chinese.txt": [
        AdapterAddress("以太网", "192.168.31.120", 24),
        AdapterAddress("vEthernet (WSL)", "172.31.208.1", 20),
    ],
    "korean.txt": [
        AdapterAddress("이더넷", "192.168.0.12", 24),
        AdapterAddress("vEthernet (WSL)", "172.20.112.1", 20),
    ],
    "english-no-wsl.txt": [
        AdapterAddress("Ethernet", "10.20.30.40", 22),
        AdapterAddress("vEthernet (Default Switch)", "172.17.160.1", 20),
    ],
}

EXPECTED_WSL = {
    "english.txt": ("172.27.64.1", "vEthernet (WSL)", "172.27.64.0/20"),
    "german-all.txt": ("172.22.16.1", "vEthernet (WSL (Hyper-V firewall))", "172.22.16.0/20"),
    "french.txt": ("172.23.48.1", "vEthernet (WSL (Hyper-V firewall))", "172.23.48.0/20"),
    "spanish.txt": ("172.29.96.1", "vEthernet (WSL)", "172.29.96.0/20"),
    "japanese.txt": ("172.26.128.1", "vEthernet (WSL)", "172.26.128.0/20"),
    "chinese.txt": ("172.31.208.1", "vEthernet (WSL)", "172.31.208.0/20"),
    "korean.txt": ("172.20.112.1", "vEthernet (WSL)", "172.20.112.0/20"),
}


def test_fixtures_are_stored_with_windows_line_ends() -> None:
    for name in EXPECTED:
        text = fixture(name)
        assert text.count("\r\n") == text.count("\n") > 0, name


@pytest.mark.parametrize(("name", "expected"), EXPECTED.items())
def test_every_adapter_with_an_ipv4_address(name: str, expected: list[AdapterAddress]) -> None:
    assert parse_ipconfig(fixture(name)) == expected


@pytest.mark.parametrize("name", EXPECTED)
def test_line_ends_do_not_matter(name: str) -> None:
    crlf = fixture(name)
    assert parse_ipconfig(crlf.replace("\r\n", "\n")) == parse_ipconfig(crlf) == EXPECTED[name]


@pytest.mark.parametrize(("name", "expected"), EXPECTED_WSL.items())
def test_find_wsl_adapter(name: str, expected: tuple[str, str, str]) -> None:
    address, adapter, network = expected
    assert find_wsl_adapter(parse_ipconfig(fixture(name))) == WslAdapter(
        Discovered(address, f"{adapter} adapter in ipconfig output"), IPv4Network(network)
    )


def test_no_wsl_adapter_before_wsl_starts() -> None:
    # Hyper-V's "vEthernet (Default Switch)" is not WSL's adapter.
    assert find_wsl_adapter(parse_ipconfig(fixture("english-no-wsl.txt"))) is None


def test_a_users_own_wsl_switch_is_not_the_wsl_adapter() -> None:
    assert find_wsl_adapter([AdapterAddress("vEthernet (WSL Bridge)", "192.168.1.7", 24)]) is None


def test_network_of_an_adapter_address() -> None:
    assert AdapterAddress("vEthernet (WSL)", "172.27.64.1", 20).network == IPv4Network(
        "172.27.64.0/20"
    )


def adapter(header: str, *lines: str) -> str:
    return "\r\n".join(["", header, "", *(f"   {line}" for line in lines), ""])


@pytest.mark.parametrize("suffix", ["(Preferred)", "(Bevorzugt)", "(Préféré)", "(優先)", " (x)"])
def test_localized_suffix_after_the_address(suffix: str) -> None:
    text = adapter(
        "Ethernet adapter vEthernet (WSL):",
        f"IPv4 Address. . . : 172.27.64.1{suffix}",
        "Subnet Mask . . . : 255.255.240.0",
    )
    assert parse_ipconfig(text) == [AdapterAddress("vEthernet (WSL)", "172.27.64.1", 20)]


@pytest.mark.parametrize(
    ("header", "name"),
    [
        # An unlisted language still yields the vEthernet name ...
        ("Scheda Ethernet vEthernet (WSL):", "vEthernet (WSL)"),
        # ... and otherwise the whole header.
        ("Scheda Ethernet Ethernet:", "Scheda Ethernet Ethernet"),
        ("Carte Ethernet vEthernet (WSL) :", "vEthernet (WSL)"),
        ("Wireless LAN adapter Local Area Connection* 2:", "Local Area Connection* 2"),
        ("Tunnel adapter Teredo Tunneling Pseudo-Interface:", "Teredo Tunneling Pseudo-Interface"),
    ],
)
def test_adapter_names(header: str, name: str) -> None:
    text = adapter(header, "IPv4 Address. . . : 10.1.2.3", "Subnet Mask . . . : 255.0.0.0")
    assert parse_ipconfig(text) == [AdapterAddress(name, "10.1.2.3", 8)]


def test_several_addresses_on_one_adapter() -> None:
    text = adapter(
        "Ethernet adapter Ethernet:",
        "IPv4 Address. . . : 192.168.1.10",
        "Subnet Mask . . . : 255.255.255.0",
        "IPv4 Address. . . : 10.0.0.5",
        "Subnet Mask . . . : 255.0.0.0",
    )
    assert parse_ipconfig(text) == [
        AdapterAddress("Ethernet", "192.168.1.10", 24),
        AdapterAddress("Ethernet", "10.0.0.5", 8),
    ]


def test_an_address_without_netmask_is_left_out() -> None:
    text = adapter(
        "Ethernet adapter Ethernet:",
        "IPv4 Address. . . : 192.168.1.10",
        "IPv4 Address. . . : 10.0.0.5",
        "Subnet Mask . . . : 255.0.0.0",
    ) + adapter("Ethernet adapter Other:", "IPv4 Address. . . : 10.9.9.9")
    assert parse_ipconfig(text) == [AdapterAddress("Ethernet", "10.0.0.5", 8)]


def test_a_mask_never_crosses_into_the_next_adapter() -> None:
    text = adapter("Ethernet adapter A:", "IPv4 Address. . . : 10.0.0.5") + adapter(
        "Ethernet adapter B:", "Subnet Mask . . . : 255.0.0.0"
    )
    assert parse_ipconfig(text) == []


def test_values_that_are_not_netmasks_are_passed_over() -> None:
    text = adapter(
        "Ethernet adapter Ethernet:",
        "IPv4 Address. . . : 192.168.1.10",
        "Default Gateway . : 192.168.1.1",
        "Subnet Mask . . . : 255.0.255.0",
        "                    255.255.255.0",
    )
    assert parse_ipconfig(text) == [AdapterAddress("Ethernet", "192.168.1.10", 24)]


@pytest.mark.parametrize("value", ["0.0.0.0", "(none)", "999.1.1.1", "10.0.0.1 extra", ""])
def test_ipv4_lines_without_a_usable_address(value: str) -> None:
    text = adapter(
        "Ethernet adapter Ethernet:", f"IPv4 Address. . . : {value}", "Subnet Mask . : 255.0.0.0"
    )
    assert parse_ipconfig(text) == []


def test_lines_outside_an_adapter_are_ignored() -> None:
    # The title section of `ipconfig /all` has indented lines; an unrelated title line ends an
    # adapter's section.
    text = "\r\n".join(
        [
            "Windows IP Configuration",
            "   IPv4 Address. . . : 10.1.1.1",
            "   Subnet Mask . . . : 255.0.0.0",
            "Ethernet adapter Ethernet:",
            "   IPv4 Address. . . : 10.2.2.2",
            "Some title",
            "   Subnet Mask . . . : 255.0.0.0",
            ":",
            "   IPv4 Address. . . : 10.3.3.3",
            "   Subnet Mask . . . : 255.0.0.0",
        ]
    )
    assert parse_ipconfig(text) == []


@pytest.mark.parametrize(("code_page", "codec"), [(437, "cp437"), (850, "cp850"), (932, "cp932")])
def test_oem_codec(code_page: int, codec: str) -> None:
    assert oem_codec(code_page) == codec


def test_unknown_oem_code_page_falls_back_to_a_codec_that_decodes_every_byte() -> None:
    assert oem_codec(1) == "latin-1"


@pytest.mark.skipif(sys.platform == "win32", reason="ipconfig exists on Windows")
@pytest.mark.parametrize(
    ("answer", "reason"),
    [(None, "it did not run"), (CommandResult(1, "The system cannot find..."), "exit status 1")],
)
def test_read_ipconfig_output_says_why_ipconfig_failed(
    answer: CommandResult | None, reason: str
) -> None:
    with pytest.raises(ActionableError, match=rf"could not run ipconfig \({reason}\)"):
        read_ipconfig_output(lambda argv: answer)


def test_read_ipconfig_output_runs_ipconfig() -> None:
    ran: list[Sequence[str]] = []

    def run(argv: Sequence[str]) -> CommandResult:
        ran.append(argv)
        return CommandResult(0, fixture("english.txt"))

    assert find_wsl_adapter(parse_ipconfig(read_ipconfig_output(run))) is not None
    assert ran == [["ipconfig"]]


def assert_only_real_addresses(found: list[AdapterAddress]) -> None:
    for entry in found:
        assert 0 <= entry.prefix_len <= 32
        assert entry.adapter
        assert IPv4Address(entry.address) in entry.network


@given(st.text())
def test_never_crashes_and_returns_only_addresses(text: str) -> None:
    assert_only_real_addresses(parse_ipconfig(text))


ipconfig_lines = st.one_of(
    st.sampled_from(
        [
            "Ethernet adapter vEthernet (WSL):",
            "Carte Ethernet Ethernet :",
            "イーサネット アダプター vEthernet (WSL):",
            "Windows IP Configuration",
            "",
            ":",
        ]
    ),
    st.builds(
        "   {}: {}{}".format,
        st.sampled_from(["IPv4 Address. . .", "Subnetzmaske . .", "IPv4 アドレス . .", ""]),
        st.one_of(
            st.ip_addresses(v=4).map(str),
            st.sampled_from(["255.255.240.0", "255.255.255.255", "0.0.0.0", "300.1.2.3"]),
            st.text(),
        ),
        st.sampled_from(["", "(Preferred)", "(優先)", " ", "x"]),
    ),
    st.text(),
)


@given(st.lists(ipconfig_lines), st.sampled_from(["\r\n", "\n"]))
def test_ipconfig_like_text_yields_only_addresses(lines: list[str], line_end: str) -> None:
    assert_only_real_addresses(parse_ipconfig(line_end.join(lines)))


@pytest.mark.parametrize("name", EXPECTED)
@given(garbage=st.text())
def test_trailing_garbage_keeps_what_was_found(name: str, garbage: str) -> None:
    found = parse_ipconfig(fixture(name) + garbage)
    assert found[: len(EXPECTED[name])] == EXPECTED[name]
    assert_only_real_addresses(found)


def test_a_dotted_value_after_the_mask_is_no_second_address() -> None:
    # 0.0.0.0 reads as a valid netmask (/0): once the mask is taken, the address is used up.
    text = adapter(
        "Ethernet adapter vEthernet (WSL):",
        "IPv4 Address. . . : 172.27.64.1",
        "Subnet Mask . . . : 255.255.240.0",
        "Default Gateway . : 0.0.0.0",
        "                    255.255.255.0",
    )
    assert parse_ipconfig(text) == [AdapterAddress("vEthernet (WSL)", "172.27.64.1", 20)]


@pytest.mark.parametrize("after_colon", [" ", "   ", "\t", " \t "])
def test_a_header_with_spaces_after_its_colon(after_colon: str) -> None:
    text = adapter(
        f"Ethernet adapter vEthernet (WSL):{after_colon}",
        "IPv4 Address. . . : 172.27.64.1",
        "Subnet Mask . . . : 255.255.240.0",
    )
    assert parse_ipconfig(text) == [AdapterAddress("vEthernet (WSL)", "172.27.64.1", 20)]


@pytest.mark.parametrize(
    ("mask", "prefix_len"),
    [("255.255.255.255", 32), ("255.255.255.254", 31), ("128.0.0.0", 1), ("0.0.0.0", 0)],
)
def test_netmasks_at_the_ends_of_the_range(mask: str, prefix_len: int) -> None:
    text = adapter(
        "Ethernet adapter Ethernet:", "IPv4 Address. . . : 10.1.2.3", f"Subnet Mask . : {mask}"
    )
    assert parse_ipconfig(text) == [AdapterAddress("Ethernet", "10.1.2.3", prefix_len)]


@pytest.mark.parametrize("value", ["255.255.255.256", "255.255.1.0", "0.0.0.1", "255.255.240"])
def test_values_that_only_look_like_netmasks(value: str) -> None:
    text = adapter(
        "Ethernet adapter Ethernet:", "IPv4 Address. . . : 10.1.2.3", f"Subnet Mask . : {value}"
    )
    assert parse_ipconfig(text) == []


def test_the_ipv4_label_in_any_case_and_the_value_after_the_last_colon_space() -> None:
    text = adapter(
        "Ethernet adapter Ethernet:",
        "IPV4-Adresse (Autokonfiguration): . : 10.1.2.3",
        "Subnetzmaske: . . : 255.0.0.0",
    )
    assert parse_ipconfig(text) == [AdapterAddress("Ethernet", "10.1.2.3", 8)]


def test_address_lines_before_any_adapter_header_belong_to_none() -> None:
    text = "   IPv4 Address. . . : 10.1.1.1\r\n   Subnet Mask . . . : 255.0.0.0\r\n"
    assert parse_ipconfig(text) == []


def test_a_mask_without_an_address_before_it_is_no_address() -> None:
    text = adapter("Ethernet adapter Ethernet:", "Subnet Mask . . . : 255.0.0.0")
    assert parse_ipconfig(text) == []


def test_the_fix_when_ipconfig_fails() -> None:
    with pytest.raises(ActionableError) as raised:
        read_ipconfig_output(lambda argv: None)
    assert raised.value.fix == "check that ipconfig runs in a Windows shell"
