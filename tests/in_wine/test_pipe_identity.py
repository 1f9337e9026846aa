"""The LocalAPI pipe's client identity, read as tailscaled reads it (under Wine, and natively on
the Windows CI runner).

tailscaled learns who each pipe client is by impersonating it, and refuses a client at the
Anonymous level. The product opens the pipe asking for the Identification level, the least
that lets the daemon read who it is, as Tailscale's own client does. These tests serve a pipe
with tailscaled's security descriptor and a server that checks the identity first
(tests/in_wine/pipe_server.py `identified`), then connect with the product's `open_named_pipe`.

How far Wine 8 goes: it implements GetNamedPipeClientProcessId, ImpersonateNamedPipeClient,
OpenThreadToken and GetTokenInformation, and honours the security descriptor for this user;
but it ignores the impersonation level a client asks for and reports Impersonation for every
client, Anonymous ones included. So under Wine the level the product asks for is checked at
the CreateFileW call itself, and the level the server sees is checked on real Windows.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
import trio

pytestmark = pytest.mark.skipif(
    sys.platform != "win32", reason="Windows only (run: tools/winpy -m pytest tests/in_wine)"
)

if sys.platform == "win32":
    from tailscale_wsl2.net import _windows_pipe
    from tailscale_wsl2.net._windows_pipe import open_named_pipe
    from tests.in_wine.pipe_server import (
        TAILSCALED_SDDL,
        ClientIdentity,
        ImpersonationLevel,
        identified,
        open_pipe_at_level,
        serve_named_pipe,
        unique_pipe_name,
    )
    from tests.in_wine.wine_main import running_under_wine

# Everything below is Windows-only: mypy checks it with --platform win32.
assert sys.platform == "win32" or not TYPE_CHECKING

SECURITY_SQOS_PRESENT = 0x00100000
LEVEL_BITS = 0x00030000


Connect = Callable[[str], Awaitable["_windows_pipe.NamedPipeStream"]]


async def anonymous(name: str) -> _windows_pipe.NamedPipeStream:
    return open_pipe_at_level(name, ImpersonationLevel.ANONYMOUS)


async def exchange(
    connect: Connect, request: bytes = b"GET /localapi/v0/status HTTP/1.1\r\n\r\n"
) -> tuple[bytes, list[ClientIdentity]]:
    """Serve one tailscaled-like pipe; connect with `connect(name)`, send, read the answer."""
    seen: list[ClientIdentity] = []

    async def answer(stream: trio.abc.Stream, identity: ClientIdentity) -> None:
        seen.append(identity)
        await stream.receive_some()
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    name = unique_pipe_name("identity")
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(serve_named_pipe, identified(answer), name, sddl=TAILSCALED_SDDL)
        )
        with trio.fail_after(10):
            async with await connect(name) as client:
                await client.send_all(request)
                received = await client.receive_some()
        nursery.cancel_scope.cancel()
    return received, seen


async def test_the_product_asks_for_the_identification_level(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flags_seen: list[int] = []
    real_create_file = _windows_pipe._CreateFileW

    def recording(*args: Any) -> Any:
        flags_seen.append(args[5])  # dwFlagsAndAttributes
        return real_create_file(*args)

    monkeypatch.setattr(_windows_pipe, "_CreateFileW", recording)
    received, _ = await exchange(open_named_pipe)
    assert received.startswith(b"HTTP/1.1 200 OK")
    [flags] = flags_seen
    assert flags & SECURITY_SQOS_PRESENT
    assert (flags & LEVEL_BITS) >> 16 == ImpersonationLevel.IDENTIFICATION


async def test_a_tailscaled_like_server_identifies_the_product() -> None:
    received, [identity] = await exchange(open_named_pipe)
    assert received.startswith(b"HTTP/1.1 200 OK")
    assert identity.pid == os.getpid()
    assert identity.user_sid.startswith("S-1-5-")
    # Wine reports Impersonation whatever the client asked for.
    expected = (
        ImpersonationLevel.IMPERSONATION
        if running_under_wine()
        else ImpersonationLevel.IDENTIFICATION
    )
    assert identity.level is expected


async def test_an_anonymous_client_is_refused_on_windows() -> None:
    received, seen = await exchange(anonymous)
    if running_under_wine():
        # Wine ignores the level asked for: the check cannot refuse here.
        assert [identity.level for identity in seen] == [ImpersonationLevel.IMPERSONATION]
        assert received.startswith(b"HTTP/1.1 200 OK")
    else:
        assert seen == []
        assert received == b""
