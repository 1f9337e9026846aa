"""Every IPv4 address of every network adapter on Windows, cheaply and in any language.

The Windows half looks for the vEthernet (WSL) adapter every couple of seconds (see
`adapter_watch.py`), so running `ipconfig` and parsing its localized text each time is out.
Three sources, best first, all returning `list[AdapterAddress]` (friendly adapter names, as
`ipconfig` shows them, so `find_wsl_adapter` works on any of them):

1. `psutil.net_if_addrs()`: friendly names with netmasks; a dependency on Windows.
2. `GetAdaptersAddresses` through ctypes, should psutil be missing (a source checkout run with
   a bare Python): what psutil calls underneath.
3. The `ipconfig` parser, should both fail.

The conversion from psutil's answer is pure and tested on Linux; the ctypes code runs only on
Windows (under Wine in tests/in_wine).
"""

import logging
import socket
import sys
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network
from typing import Protocol

from tailscale_wsl2.windows.ipconfig import AdapterAddress, parse_ipconfig, read_ipconfig_output

__all__ = ["adapters_from_psutil", "list_adapters"]

log = logging.getLogger(__name__)


class PsutilAddress(Protocol):
    """The fields used of psutil's `snicaddr`."""

    @property
    def family(self) -> int: ...
    @property
    def address(self) -> str: ...
    @property
    def netmask(self) -> str | None: ...


def _prefix_len(netmask: str | None) -> int | None:
    try:
        return IPv4Network(f"0.0.0.0/{netmask}").prefixlen if netmask else None
    except ValueError:
        return None  # not a contiguous mask


def adapters_from_psutil(
    net_if_addrs: Mapping[str, Sequence[PsutilAddress]],
) -> list[AdapterAddress]:
    """The IPv4 addresses (with a netmask) in a `psutil.net_if_addrs()` answer."""
    found = []
    for adapter, addresses in net_if_addrs.items():
        for entry in addresses:
            prefix_len = _prefix_len(entry.netmask)
            if entry.family == socket.AF_INET and prefix_len is not None:
                found.append(AdapterAddress(adapter, entry.address, prefix_len))
    return found


def list_adapters() -> list[AdapterAddress]:
    """Every adapter's IPv4 addresses, from the best source available (see the module header)."""
    try:
        import psutil  # type: ignore[import-untyped]  # noqa: PLC0415 (Windows only)
    except ImportError:
        log.debug("psutil is missing: enumerating adapters with GetAdaptersAddresses")
    else:
        return adapters_from_psutil(psutil.net_if_addrs())
    if sys.platform == "win32":
        try:
            return get_adapters_addresses()
        except OSError as exc:
            log.debug("GetAdaptersAddresses failed (%s): falling back to ipconfig", exc)
    return parse_ipconfig(read_ipconfig_output())


if sys.platform == "win32":
    import ctypes
    from ctypes import wintypes

    # iptypes.h, as far as the fields used here; the API allocates the list, so a shorter
    # structure than Windows' is safe to read through.
    class _SocketAddress(ctypes.Structure):
        _fields_ = (("lpSockaddr", ctypes.c_void_p), ("iSockaddrLength", ctypes.c_int))

    class _UnicastAddress(ctypes.Structure):
        pass

    _UnicastAddress._fields_ = (
        ("Length", wintypes.ULONG),
        ("Flags", wintypes.DWORD),
        ("Next", ctypes.POINTER(_UnicastAddress)),
        ("Address", _SocketAddress),
        ("PrefixOrigin", ctypes.c_int),
        ("SuffixOrigin", ctypes.c_int),
        ("DadState", ctypes.c_int),
        ("ValidLifetime", wintypes.ULONG),
        ("PreferredLifetime", wintypes.ULONG),
        ("LeaseLifetime", wintypes.ULONG),
        ("OnLinkPrefixLength", ctypes.c_ubyte),
    )

    class _AdapterAddresses(ctypes.Structure):
        pass

    _AdapterAddresses._fields_ = (
        ("Length", wintypes.ULONG),
        ("IfIndex", wintypes.DWORD),
        ("Next", ctypes.POINTER(_AdapterAddresses)),
        ("AdapterName", ctypes.c_char_p),
        ("FirstUnicastAddress", ctypes.POINTER(_UnicastAddress)),
        ("FirstAnycastAddress", ctypes.c_void_p),
        ("FirstMulticastAddress", ctypes.c_void_p),
        ("FirstDnsServerAddress", ctypes.c_void_p),
        ("DnsSuffix", ctypes.c_wchar_p),
        ("Description", ctypes.c_wchar_p),
        ("FriendlyName", ctypes.c_wchar_p),
    )

    _GAA_FLAG_SKIP_ANYCAST = 0x2
    _GAA_FLAG_SKIP_MULTICAST = 0x4
    _GAA_FLAG_SKIP_DNS_SERVER = 0x8
    _ERROR_BUFFER_OVERFLOW = 111
    _ERROR_NO_DATA = 232
    # Microsoft's advice: start with 15 KB, which fits most machines in one call.
    _FIRST_BUFFER_SIZE = 15_000

    _iphlpapi = ctypes.WinDLL("iphlpapi")
    _GetAdaptersAddresses = _iphlpapi.GetAdaptersAddresses
    _GetAdaptersAddresses.argtypes = (
        wintypes.ULONG,  # Family
        wintypes.ULONG,  # Flags
        wintypes.LPVOID,  # Reserved
        wintypes.LPVOID,  # AdapterAddresses
        ctypes.POINTER(wintypes.ULONG),  # SizePointer
    )
    _GetAdaptersAddresses.restype = wintypes.ULONG

    def _raw_adapter_list() -> ctypes.Array[ctypes.c_char] | None:
        size = wintypes.ULONG(_FIRST_BUFFER_SIZE)
        flags = _GAA_FLAG_SKIP_ANYCAST | _GAA_FLAG_SKIP_MULTICAST | _GAA_FLAG_SKIP_DNS_SERVER
        # The list can grow between calls (an adapter appears), hence a loop.
        while True:
            buffer = ctypes.create_string_buffer(size.value)
            error = _GetAdaptersAddresses(socket.AF_INET, flags, None, buffer, ctypes.byref(size))
            if error == 0:
                return buffer
            if error == _ERROR_NO_DATA:
                return None
            if error != _ERROR_BUFFER_OVERFLOW:
                raise ctypes.WinError(error)

    def _ipv4(address: _SocketAddress) -> str:
        # sockaddr_in: family (2 bytes), port (2 bytes), then the address.
        raw = ctypes.string_at(address.lpSockaddr, 8)
        return str(IPv4Address(raw[4:8]))

    def get_adapters_addresses() -> list[AdapterAddress]:
        """Every adapter's IPv4 addresses, from `GetAdaptersAddresses` (iphlpapi)."""
        buffer = _raw_adapter_list()
        if buffer is None:
            return []
        found = []
        adapter = ctypes.cast(buffer, ctypes.POINTER(_AdapterAddresses))
        while adapter:
            unicast = adapter.contents.FirstUnicastAddress
            while unicast:
                entry = unicast.contents
                found.append(
                    AdapterAddress(
                        adapter.contents.FriendlyName or "",
                        _ipv4(entry.Address),
                        entry.OnLinkPrefixLength,
                    )
                )
                unicast = entry.Next
            adapter = adapter.contents.Next
        return found
