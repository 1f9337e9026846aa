"""The Windows half's own Windows code, for real under Wine (tools/winpy -m pytest tests/in_wine).

- adapter enumeration through psutil and through GetAdaptersAddresses (Wine reports Linux
  interface names, so the lists are checked for shape, not for names);
- `--upstream auto` against a real named-pipe server, a TCP port, and nothing at all;
- the elevation check answers.
"""

from __future__ import annotations

import socket
import sys
from functools import partial
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

import pytest
import trio

pytestmark = pytest.mark.skipif(
    sys.platform != "win32", reason="Windows only (run: tools/winpy -m pytest tests/in_wine)"
)

if sys.platform == "win32":
    from tailscale_wsl2.net._windows_pipe import NamedPipeStream
    from tailscale_wsl2.net.connect import UpstreamUnavailable
    from tailscale_wsl2.net.endpoints import NamedPipeEndpoint, TcpEndpoint
    from tailscale_wsl2.windows.adapters import get_adapters_addresses, list_adapters
    from tailscale_wsl2.windows.elevation import is_admin
    from tailscale_wsl2.windows.ipconfig import AdapterAddress
    from tailscale_wsl2.windows.localapi import AutoLocalApi, LocalApiAuto
    from tests.in_wine.pipe_server import serve_named_pipe, unique_pipe_name

# Everything below is Windows-only: mypy checks it with --platform win32.
assert sys.platform == "win32" or not TYPE_CHECKING

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"


def well_formed(addresses: list[AdapterAddress]) -> None:
    assert addresses, "no adapter at all (Wine has at least loopback)"
    for entry in addresses:
        assert isinstance(entry.adapter, str)
        assert entry.adapter
        IPv4Address(entry.address)
        assert 0 <= entry.prefix_len <= 32
        assert IPv4Address(entry.address) in entry.network


def test_psutil_enumeration_is_well_formed() -> None:
    well_formed(list_adapters())


def test_get_adapters_addresses_is_well_formed_and_agrees_with_psutil() -> None:
    through_ctypes = get_adapters_addresses()
    well_formed(through_ctypes)
    assert {e.address for e in through_ctypes} == {e.address for e in list_adapters()}


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def answer_once(stream: NamedPipeStream) -> None:
    """A LocalAPI stand-in: read one request head, answer, close."""
    async with stream:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = await stream.receive_some()
            if not chunk:
                return
            request += chunk
        await stream.send_all(ANSWER)


async def test_auto_uses_the_pipe_when_it_exists() -> None:
    name = unique_pipe_name("auto")
    auto = LocalApiAuto(NamedPipeEndpoint(name), TcpEndpoint("127.0.0.1", free_tcp_port()))
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_named_pipe, answer_once, name)
        async with await AutoLocalApi(auto)() as stream:
            assert isinstance(stream, NamedPipeStream)
            assert stream.pipe_name == name
        nursery.cancel_scope.cancel()


async def test_auto_falls_back_to_the_legacy_port() -> None:
    async def hello(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.send_all(b"legacy")

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, hello, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        auto = LocalApiAuto(
            NamedPipeEndpoint(unique_pipe_name("none")), TcpEndpoint("127.0.0.1", port)
        )
        async with await AutoLocalApi(auto)() as stream:
            assert await stream.receive_some() == b"legacy"
        nursery.cancel_scope.cancel()


async def test_auto_with_nothing_running_is_one_line() -> None:
    pipe = unique_pipe_name("none")
    port = free_tcp_port()
    auto = LocalApiAuto(NamedPipeEndpoint(pipe), TcpEndpoint("127.0.0.1", port))
    with pytest.raises(UpstreamUnavailable) as caught:
        await AutoLocalApi(auto)()
    assert str(caught.value) == (
        f"Tailscale is not running on Windows (no LocalAPI pipe {pipe}, nothing on "
        f"127.0.0.1:{port}); start Tailscale, then run `tailscale-wsl2 doctor`"
    )


def test_the_elevation_check_answers() -> None:
    assert isinstance(is_admin(), bool)
