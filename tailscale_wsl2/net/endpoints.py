"""Endpoints: where a half listens and where it connects, as plain values.

On the command line an endpoint is written `tcp:HOST:PORT`, `unix:PATH` or
`npipe:NAME`. Hosts are IP literals on purpose: every address this program uses
is discovered or typed as an address, so a connect never waits on a resolver.
"""

import ipaddress
from dataclasses import dataclass

__all__ = [
    "Discovered",
    "Endpoint",
    "IPNetwork",
    "NamedPipeEndpoint",
    "TcpEndpoint",
    "UnixEndpoint",
    "parse_endpoint",
    "parse_ip",
]


@dataclass(frozen=True)
class TcpEndpoint:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class UnixEndpoint:
    path: str

    def __str__(self) -> str:
        return self.path


@dataclass(frozen=True)
class NamedPipeEndpoint:
    """A Windows named pipe, by its full name (`\\\\.\\pipe\\...`)."""

    name: str

    def __str__(self) -> str:
        return self.name


Endpoint = TcpEndpoint | UnixEndpoint | NamedPipeEndpoint


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Discovered:
    """An address and the short human phrase naming the method that found it."""

    address: str
    method: str


def parse_ip(text: str) -> str:
    """Return `text` as a normalised IP literal, or raise ValueError."""
    try:
        return str(ipaddress.ip_address(text.strip().strip("[]")))
    except ValueError:
        raise ValueError(f"not an IP address: {text!r}") from None


def parse_port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"not a TCP port (1-65535): {text!r}")
    return int(text)


def parse_endpoint(text: str) -> Endpoint:
    """Parse `tcp:HOST:PORT`, `unix:PATH` or `npipe:NAME`; raise ValueError."""
    kind, sep, rest = text.partition(":")
    if not sep or not rest:
        raise ValueError(f"expected tcp:HOST:PORT, unix:PATH or npipe:NAME, got {text!r}")
    if kind == "unix":
        return UnixEndpoint(rest)
    if kind == "npipe":
        return NamedPipeEndpoint(rest)
    if kind == "tcp":
        host, sep, port = rest.rpartition(":")
        if not sep:
            raise ValueError(f"expected tcp:HOST:PORT, got {text!r}")
        return TcpEndpoint(parse_ip(host), parse_port(port))
    raise ValueError(f"unknown endpoint kind {kind!r} in {text!r} (tcp, unix or npipe)")
