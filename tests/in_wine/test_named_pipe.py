"""Tests of tailscale_wsl2.net._windows_pipe against real named pipes (under Wine, via tools/winpy).

Strategy: each test serves a pipe of its own (a unique name) with tests/in_wine/pipe_server.py
and connects with `open_named_pipe`, so every call goes through the Win32 pipe API and trio's
IOCP loop for real. trio's generic stream conformance checks run first; the tests after them
cover what the relay relies on: byte-exact bulk transfer, end-of-file when the daemon closes,
closing and cancelling with a read in flight, and the errors for missing and busy pipes.
"""

from __future__ import annotations

import random
import sys
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

pytestmark = pytest.mark.skipif(
    sys.platform != "win32", reason="Windows only (run: tools/winpy -m pytest tests/in_wine)"
)

if sys.platform == "win32":
    from tailscale_wsl2.net._windows_pipe import (
        NamedPipeStream,
        PipeBusyError,
        PipeNotFoundError,
        open_named_pipe,
    )
    from tests.in_wine.pipe_server import NamedPipeListener, serve_named_pipe, unique_pipe_name

# Everything below is Windows-only: mypy checks it with --platform win32.
assert sys.platform == "win32" or not TYPE_CHECKING

MIB = 1024 * 1024


async def connected_pair() -> tuple[NamedPipeStream, NamedPipeStream]:
    """(client end, server end) of a fresh pipe."""
    listener = NamedPipeListener(unique_pipe_name("pair"))
    client = await open_named_pipe(listener.name)
    server = await listener.accept()
    await listener.aclose()
    return client, server


async def test_trio_stream_conformance() -> None:
    await trio.testing.check_two_way_stream(connected_pair, None)


async def test_one_mebibyte_each_way_byte_exact() -> None:
    to_server = random.Random(1).randbytes(MIB)
    to_client = random.Random(2).randbytes(MIB)
    received_by_server = bytearray()
    received_by_client = bytearray()
    client, server = await connected_pair()

    async def receive_exactly(stream: NamedPipeStream, into: bytearray, size: int) -> None:
        while len(into) < size:
            chunk = await stream.receive_some()
            assert chunk, "end-of-file before all the data arrived"
            into += chunk

    # Both directions at once: a pipe's buffers are far smaller than 1 MiB, so this also
    # proves that reads and writes on one handle do not block each other.
    async with client, server, trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, to_server)
        nursery.start_soon(server.send_all, to_client)
        nursery.start_soon(receive_exactly, server, received_by_server, MIB)
        nursery.start_soon(receive_exactly, client, received_by_client, MIB)

    assert received_by_server == to_server
    assert received_by_client == to_client


async def test_echo_server_with_serve_named_pipe() -> None:
    payload = random.Random(3).randbytes(MIB)

    async def echo(stream: NamedPipeStream) -> None:
        async with stream:
            while chunk := await stream.receive_some():
                await stream.send_all(chunk)

    async with trio.open_nursery() as nursery:
        listener = await nursery.start(serve_named_pipe, echo, unique_pipe_name("echo"))
        async with await open_named_pipe(listener.name) as client:
            nursery.start_soon(client.send_all, payload)
            echoed = bytearray()
            while len(echoed) < len(payload):
                echoed += await client.receive_some()
        nursery.cancel_scope.cancel()

    assert echoed == payload


async def test_server_close_delivers_the_data_then_end_of_file() -> None:
    # The daemon's pattern: write the answer, close at once. Nothing written may be lost.
    client, server = await connected_pair()
    answer = random.Random(4).randbytes(200_000)
    async with client:
        async with server:
            await server.send_all(answer)
        received = bytearray()
        while chunk := await client.receive_some():
            received += chunk
        assert received == answer
        assert await client.receive_some() == b""


async def test_send_after_server_close_is_broken_resource() -> None:
    client, server = await connected_pair()
    await server.aclose()
    async with client:
        with pytest.raises(trio.BrokenResourceError, match="other end"):
            await client.send_all(b"GET /localapi/v0/status HTTP/1.1\r\n\r\n")


async def test_aclose_with_a_read_in_flight() -> None:
    client, server = await connected_pair()
    outcome: list[BaseException] = []

    async def read_forever() -> None:
        try:
            await client.receive_some()
        except trio.ClosedResourceError as exc:
            outcome.append(exc)

    async with server, trio.open_nursery() as nursery:
        nursery.start_soon(read_forever)
        await trio.testing.wait_all_tasks_blocked()
        await client.aclose()
    assert len(outcome) == 1
    assert client.closed
    with pytest.raises(trio.ClosedResourceError):
        await client.receive_some()


async def test_cancelled_read_leaves_the_stream_usable() -> None:
    client, server = await connected_pair()
    async with client, server:
        with trio.move_on_after(0.2) as scope:
            await client.receive_some()
        assert scope.cancelled_caught
        await server.send_all(b"still here")
        assert await client.receive_some() == b"still here"
        await client.send_all(b"and back")
        assert await server.receive_some() == b"and back"


async def test_receive_some_honours_max_bytes() -> None:
    client, server = await connected_pair()
    async with client, server:
        await server.send_all(b"0123456789")
        assert await client.receive_some(4) == b"0123"
        assert await client.receive_some(100) == b"456789"
        with pytest.raises(ValueError, match="max_bytes"):
            await client.receive_some(0)


async def test_missing_pipe_names_the_pipe() -> None:
    name = unique_pipe_name("missing")
    with pytest.raises(PipeNotFoundError) as caught:
        await open_named_pipe(name)
    assert isinstance(caught.value, FileNotFoundError)
    assert caught.value.pipe_name == name
    assert name in str(caught.value)


async def test_busy_pipe_waits_for_a_free_instance() -> None:
    listener = NamedPipeListener(unique_pipe_name("busy"))
    first = await open_named_pipe(listener.name)
    first_server = await listener.accept()
    # Every instance is now connected and none listens: a new client sees ERROR_PIPE_BUSY.
    opened_at: list[float] = []
    started = trio.current_time()

    async def second_client() -> None:
        async with await open_named_pipe(listener.name, busy_timeout=10) as second:
            opened_at.append(trio.current_time() - started)
            await second.send_all(b"second")

    async with first, first_server, listener, trio.open_nursery() as nursery:
        nursery.start_soon(second_client)
        await trio.sleep(0.5)
        assert not opened_at, "connected although every instance was busy"
        async with await listener.accept() as second_server:
            assert await second_server.receive_some() == b"second"
    assert opened_at
    assert 0.4 <= opened_at[0] < 5


async def test_busy_pipe_times_out_with_a_clear_error() -> None:
    listener = NamedPipeListener(unique_pipe_name("busy-timeout"))
    first = await open_named_pipe(listener.name)
    first_server = await listener.accept()
    async with first, first_server, listener:
        started = trio.current_time()
        with pytest.raises(PipeBusyError) as caught:
            await open_named_pipe(listener.name, busy_timeout=0.5)
        waited = trio.current_time() - started
    assert listener.name in str(caught.value)
    assert "busy" in str(caught.value)
    assert isinstance(caught.value, TimeoutError)
    assert 0.4 <= waited < 5


async def test_client_connecting_before_accept() -> None:
    # The client connects before the server's ConnectNamedPipe (ERROR_PIPE_CONNECTED).
    listener = NamedPipeListener(unique_pipe_name("early"))
    async with listener, await open_named_pipe(listener.name) as client:
        await client.send_all(b"early")
        async with await listener.accept() as server:
            assert await server.receive_some() == b"early"


async def test_open_is_cancellable_while_waiting_for_a_busy_pipe() -> None:
    listener = NamedPipeListener(unique_pipe_name("busy-cancel"))
    first = await open_named_pipe(listener.name)
    first_server = await listener.accept()
    async with first, first_server, listener:
        with trio.move_on_after(0.3) as scope:
            await open_named_pipe(listener.name, busy_timeout=30)
        assert scope.cancelled_caught


async def test_two_concurrent_receives_conflict() -> None:
    client, server = await connected_pair()
    async with client, server, trio.open_nursery() as nursery:
        nursery.start_soon(partial(client.receive_some, 10))
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await client.receive_some()
        await server.send_all(b"x")
