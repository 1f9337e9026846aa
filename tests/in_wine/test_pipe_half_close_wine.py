"""An HTTP exchange through the Windows half's relay to a named-pipe LocalAPI, under Wine.

A pipe has no half-close. When the `tailscale` CLI (or curl) half-closes its end after the
request, the relay must not close the pipe: it stops writing to it and keeps copying the
daemon's answer back until the daemon closes (pump.py). This test sends a request, half-closes,
and expects the whole answer.
"""

from __future__ import annotations

import socket
import sys
from typing import TYPE_CHECKING

import pytest
import trio

pytestmark = pytest.mark.skipif(
    sys.platform != "win32", reason="Windows only (run: tools/winpy -m pytest tests/in_wine)"
)

if sys.platform == "win32":
    from tailscale_wsl2.net.endpoints import NamedPipeEndpoint, TcpEndpoint
    from tailscale_wsl2.net.listeners import open_tcp_listener
    from tailscale_wsl2.net.sockets import connect_socket
    from tailscale_wsl2.relay.core import Relay
    from tailscale_wsl2.windows.localapi import AutoLocalApi, LocalApiAuto
    from tests.in_wine.pipe_server import serve_named_pipe, unique_pipe_name
    from tests.in_wine.test_windows_half_wine import ANSWER, answer_once, free_tcp_port

# Everything below is Windows-only: mypy checks it with --platform win32.
assert sys.platform == "win32" or not TYPE_CHECKING


async def test_http_through_the_relay_to_a_pipe_when_the_client_half_closes() -> None:
    name = unique_pipe_name("half-close")
    auto = LocalApiAuto(NamedPipeEndpoint(name), TcpEndpoint("127.0.0.1", free_tcp_port()))
    relay = Relay.for_links(AutoLocalApi(auto), grace_period=0.5)
    listener = open_tcp_listener(TcpEndpoint("127.0.0.1", 0))
    port = listener.socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_named_pipe, answer_once, name)
        await nursery.start(relay.serve, [listener])
        with trio.fail_after(10):
            client = await connect_socket(socket.AF_INET, ("127.0.0.1", port), timeout=5)
            async with client:
                await client.send_all(
                    b"GET /localapi/v0/status HTTP/1.1\r\nHost: local-tailscaled.sock\r\n\r\n"
                )
                await client.send_eof()  # what `curl` and friends may do after a request
                received = b""
                while chunk := await client.receive_some():
                    received += chunk
        assert received == ANSWER
        relay.stop_accepting()
        nursery.cancel_scope.cancel()
