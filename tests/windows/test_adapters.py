"""Adapter enumeration: psutil's answer as `AdapterAddress` values (the real call runs under
Wine in tests/in_wine)."""

import socket
from typing import NamedTuple

from tailscale_wsl2.windows.adapters import adapters_from_psutil
from tailscale_wsl2.windows.ipconfig import AdapterAddress, find_wsl_adapter


class Snicaddr(NamedTuple):
    """psutil's `snicaddr`, as `net_if_addrs()` returns it on Windows."""

    family: int
    address: str
    netmask: str | None
    broadcast: str | None = None
    ptp: str | None = None


AF_LINK = -1  # psutil.AF_LINK: the MAC address entry

NET_IF_ADDRS = {
    "Ethernet": [
        Snicaddr(AF_LINK, "00-15-5D-01-02-03", None),
        Snicaddr(socket.AF_INET, "192.168.1.20", "255.255.255.0"),
        Snicaddr(socket.AF_INET6, "fe80::1", None),
    ],
    "vEthernet (WSL (Hyper-V firewall))": [
        Snicaddr(socket.AF_INET6, "fe80::2", None),
        Snicaddr(socket.AF_INET, "172.22.16.1", "255.255.240.0"),
    ],
    "Loopback Pseudo-Interface 1": [Snicaddr(socket.AF_INET, "127.0.0.1", "255.0.0.0")],
    "Odd": [
        Snicaddr(socket.AF_INET, "10.0.0.1", None),  # no netmask: left out
        Snicaddr(socket.AF_INET, "10.0.0.2", "255.0.255.0"),  # not a netmask: left out
    ],
}


def test_ipv4_addresses_with_their_prefix_lengths() -> None:
    assert adapters_from_psutil(NET_IF_ADDRS) == [
        AdapterAddress("Ethernet", "192.168.1.20", 24),
        AdapterAddress("vEthernet (WSL (Hyper-V firewall))", "172.22.16.1", 20),
        AdapterAddress("Loopback Pseudo-Interface 1", "127.0.0.1", 8),
    ]


def test_the_wsl_adapter_is_found_by_its_friendly_name() -> None:
    adapter = find_wsl_adapter(adapters_from_psutil(NET_IF_ADDRS), found_in="the adapter list")
    assert adapter is not None
    assert adapter.found.address == "172.22.16.1"
    assert adapter.found.method == (
        "vEthernet (WSL (Hyper-V firewall)) adapter in the adapter list"
    )


def test_nothing_in_nothing_out() -> None:
    assert adapters_from_psutil({}) == []
