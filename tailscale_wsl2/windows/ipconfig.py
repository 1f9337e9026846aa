"""The Windows half's view of the WSL network, read from `ipconfig` output.

`ipconfig` is localized (English, German, French, Japanese, ... labels) and printed in the OEM
code page, so the parser leans on the layout rather than on words:

- an adapter header is a line without indentation that ends with ":" (French puts a space
  before it); the adapter's name follows a localized "<type> adapter" prefix, which a table strips
  (names starting at `vEthernet` need no table);
- an address line is an indented line whose label contains "IPv4" (untranslated everywhere) and
  whose value, after the last ": ", is a dotted quad, perhaps followed by a "(Preferred)"-style
  suffix in the local language;
- its subnet mask is the next dotted-quad value of the same adapter that is a valid netmask.

Disconnected adapters need no special case: they list no IPv4 address.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.net.endpoints import Discovered
from tailscale_wsl2.system import RunCommand, run_command

__all__ = [
    "WSL_ADAPTER_NAMES",
    "AdapterAddress",
    "WslAdapter",
    "find_wsl_adapter",
    "parse_ipconfig",
    "read_ipconfig_output",
]

# The adapter WSL creates: the second name when the WSL Hyper-V firewall is on. Only one exists at
# a time. A user's own Hyper-V switch (say "vEthernet (WSL Bridge)" for bridged networking) must
# not match, so the names are compared exactly.
WSL_ADAPTER_NAMES = ("vEthernet (WSL)", "vEthernet (WSL (Hyper-V firewall))")

# "<type> adapter " as ipconfig prints it per language; no entry is a prefix of another.
_ADAPTER_PREFIXES = (
    # English
    "Ethernet adapter ",
    "Wireless LAN adapter ",
    "Unknown adapter ",
    "Tunnel adapter ",
    "PPP adapter ",
    "Mobile Broadband adapter ",
    # German
    "Ethernet-Adapter ",
    "Drahtlos-LAN-Adapter ",
    "Unbekannter Adapter ",
    "Tunneladapter ",
    "PPP-Adapter ",
    # French
    "Carte Ethernet ",
    "Carte réseau sans fil ",
    "Carte inconnue ",
    "Carte Tunnel ",
    "Carte PPP ",
    # Spanish
    "Adaptador de Ethernet ",
    "Adaptador de LAN inalámbrica ",
    "Adaptador desconocido ",
    "Adaptador de túnel ",
    "Adaptador PPP ",
    # Japanese
    "イーサネット アダプター ",
    "無線 LAN アダプター ",
    "不明なアダプター ",
    "トンネル アダプター ",
    # Chinese (simplified)
    "以太网适配器 ",
    "无线局域网适配器 ",
    "未知适配器 ",
    "隧道适配器 ",
    # Korean
    "이더넷 어댑터 ",
    "무선 LAN 어댑터 ",
    "알 수 없는 어댑터 ",
    "터널 어댑터 ",
)

_DOTTED_QUAD = r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}"
# The suffix is localized: (Preferred), (Bevorzugt), (Préféré), (優先), (Duplicate), ...
_ADDRESS_VALUE = re.compile(rf"({_DOTTED_QUAD})\s*(?:\(.*)?")
_NETMASK_VALUE = re.compile(_DOTTED_QUAD)


@dataclass(frozen=True)
class AdapterAddress:
    """One IPv4 address of one adapter, e.g. ("vEthernet (WSL)", "172.27.64.1", 20)."""

    adapter: str
    address: str
    prefix_len: int

    @property
    def network(self) -> IPv4Network:
        """The subnet the address lies in, e.g. 172.27.64.0/20."""
        return IPv4Network(f"{self.address}/{self.prefix_len}", strict=False)


@dataclass(frozen=True)
class WslAdapter:
    """The host's address on the WSL network (with how it was found) and the WSL subnet."""

    found: Discovered
    network: IPv4Network


def _adapter_name(header: str) -> str | None:
    name = header.rstrip().removesuffix(":").strip()
    for prefix in _ADAPTER_PREFIXES:
        if name.startswith(prefix):
            return name.removeprefix(prefix)
    # An unlisted language: Hyper-V adapters still name themselves "vEthernet (<switch>)".
    start = name.find("vEthernet")
    return (name[start:] if start >= 0 else name) or None


def _ipv4_address(value: str) -> IPv4Address | None:
    match = _ADDRESS_VALUE.fullmatch(value.strip())
    if match is None:
        return None
    try:
        address = IPv4Address(match[1])
    except ValueError:
        return None
    # 0.0.0.0 stands for "no address yet" (DHCP pending, or a disabled static address).
    return None if address.is_unspecified else address


def _netmask_prefix(value: str) -> int | None:
    """The prefix length of a netmask like 255.255.240.0; None for any other value."""
    value = value.strip()
    if _NETMASK_VALUE.fullmatch(value) is None:
        return None
    try:
        mask = int(IPv4Address(value))
    except ValueError:
        return None
    host_bits = mask ^ 0xFFFFFFFF
    if host_bits & (host_bits + 1):  # the one-bits must run unbroken from the top
        return None
    return 32 - host_bits.bit_length()


def parse_ipconfig(text: str) -> list[AdapterAddress]:
    """Every (adapter, IPv4 address, prefix length) in `ipconfig` or `ipconfig /all` output.

    An address without a following netmask in the same adapter is left out.
    """
    found: list[AdapterAddress] = []
    adapter: str | None = None
    pending: IPv4Address | None = None  # an address still waiting for its netmask
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():  # a header, or a title line that ends the adapter before it
            adapter = _adapter_name(line) if line.rstrip().endswith(":") else None
            pending = None
            continue
        if adapter is None:  # the title section of `ipconfig /all`, or no name
            continue
        label, _, value = line.rpartition(": ")
        if "ipv4" in label.casefold():
            pending = _ipv4_address(value)
        elif pending is not None and (prefix_len := _netmask_prefix(value)) is not None:
            found.append(AdapterAddress(adapter, str(pending), prefix_len))
            pending = None
    return found


def find_wsl_adapter(
    addresses: Iterable[AdapterAddress], *, found_in: str = "ipconfig output"
) -> WslAdapter | None:
    """The first IPv4 address of the adapter WSL created, or None while WSL has not started
    since boot (the adapter exists only then). `found_in` names the source of `addresses`."""
    for entry in addresses:
        if entry.adapter in WSL_ADAPTER_NAMES:
            method = f"{entry.adapter} adapter in {found_in}"
            return WslAdapter(Discovered(entry.address, method), entry.network)
    return None


def read_ipconfig_output(run: RunCommand = run_command) -> str:
    """`ipconfig`'s output (Windows only), decoded from the console's code page."""
    answer = run(["ipconfig"])
    if answer is None or answer.returncode != 0:
        reason = "it did not run" if answer is None else f"exit status {answer.returncode}"
        raise ActionableError(
            f"could not run ipconfig ({reason})", "check that ipconfig runs in a Windows shell"
        )
    return answer.output
