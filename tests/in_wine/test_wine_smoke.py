"""Smoke test: trio's Windows (IOCP) event loop carries TCP, run for real under Wine.

If this fails, nothing else in tests/in_wine can be trusted: it checks that the Wine
environment built by tools/wine-env runs a Windows CPython whose trio can open sockets (with
the conftest's Wine patch) and move bytes over loopback.
"""

from __future__ import annotations

import sys
from functools import partial

import pytest
import trio

pytestmark = pytest.mark.skipif(sys.platform != "win32", reason="Windows only (run: tools/winpy)")


async def test_trio_runs_the_windows_iocp_loop() -> None:
    assert trio.lowlevel.current_root_task() is not None
    # The IOCP backend is the one that registers handles; the Linux backends have no such call.
    assert hasattr(trio.lowlevel, "register_with_iocp")


async def test_tcp_echo_over_loopback() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, every byte value

    async def echo(stream: trio.SocketStream) -> None:
        async with stream:
            async for chunk in stream:
                await stream.send_all(chunk)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        async with await trio.open_tcp_stream("127.0.0.1", port) as client:

            async def send_then_eof() -> None:
                await client.send_all(payload)
                await client.send_eof()

            nursery.start_soon(send_then_eof)
            received = bytearray()
            async for chunk in client:
                received += chunk
        nursery.cancel_scope.cancel()

    assert received == payload
