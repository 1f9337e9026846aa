"""The handshake budget: few, short, the oldest unproven dropped; refusals counted, slowed."""

import logging
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from tailscale_wsl2.net.connect import Hop, hop_connector
from tailscale_wsl2.net.endpoints import UnixEndpoint
from tailscale_wsl2.net.sockets import RawSocketListener, listening_socket
from tailscale_wsl2.relay.core import Relay
from tailscale_wsl2.relay.pending import (
    FREE_FAILURES,
    LINES_PER_PEER,
    SLOW_DOWN,
    PendingHandshakes,
    RefusalLog,
)


async def test_the_oldest_unproven_handshake_of_the_busiest_peer_is_dropped() -> None:
    pending = PendingHandshakes(limit=3)
    a1, b1, b2 = pending.add("a"), pending.add("b"), pending.add("b")
    a1.first_message_opened()  # a key holder's: no longer counted, never dropped
    c1 = pending.add("c")  # three unproven (b1, b2, c1): the limit, not past it
    assert not any(p.dropped for p in (a1, b1, b2, c1))
    d1 = pending.add("d")  # past it: b has the most, and b1 is its oldest
    assert [p.dropped for p in (a1, b1, b2, c1, d1)] == [False, True, False, False, False]
    assert b1.scope.cancel_called
    assert pending.unproven == 3


async def test_a_key_holder_is_never_dropped_however_many() -> None:
    pending = PendingHandshakes(limit=2)
    holders = []
    for _ in range(10):
        holders.append(pending.add("wsl"))
        holders[-1].first_message_opened()
    strangers = [pending.add("x") for _ in range(10)]
    assert not any(holder.dropped for holder in holders)
    assert sum(stranger.dropped for stranger in strangers) == 8


async def test_removed_and_cancelled_at_shutdown() -> None:
    pending = PendingHandshakes(limit=4)
    one, two = pending.add("a"), pending.add("a")
    pending.remove(one)
    pending.remove(one)  # twice is harmless
    pending.cancel_all()
    assert two.scope.cancel_called
    assert not one.scope.cancel_called


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def refusal_log(clock: Clock) -> RefusalLog:
    return RefusalLog(interval=10.0, clock=clock)


def test_each_reason_is_logged_once_and_the_rest_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    clock = Clock()
    refusals = refusal_log(clock)
    for _ in range(1000):
        refusals.refused("10.0.0.2", "wrong link key", failed_handshake=True)
    refusals.refused("10.0.0.2", "no handshake within 1s", failed_handshake=False)
    assert [r.getMessage() for r in caplog.records] == [
        "refused a connection from 10.0.0.2: wrong link key",
        "refused a connection from 10.0.0.2: no handshake within 1s",
    ]
    caplog.clear()
    clock.now = 10.0
    refusals.refused("10.0.0.2", "wrong link key", failed_handshake=True)  # a new interval
    assert [r.getMessage() for r in caplog.records] == [
        "refused 999 more connection(s) from 10.0.0.2 in the last 10s (the last: no handshake "
        "within 1s)",
        "refused a connection from 10.0.0.2: wrong link key",
    ]


def test_lines_per_peer_are_bounded_however_many_reasons(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    refusals = refusal_log(Clock())
    for index in range(100):
        refusals.refused("10.0.0.2", f"reason {index}", failed_handshake=True)
    assert len(caplog.records) == LINES_PER_PEER


def test_a_peer_that_keeps_failing_is_slowed_and_only_that_peer() -> None:
    clock = Clock()
    refusals = refusal_log(clock)
    for _ in range(FREE_FAILURES):
        refusals.refused("10.0.0.2", "wrong link key", failed_handshake=True)
    assert refusals.delay("10.0.0.2") == 0
    refusals.refused("10.0.0.2", "wrong link key", failed_handshake=True)
    assert refusals.delay("10.0.0.2") == SLOW_DOWN
    assert refusals.delay("10.0.0.3") == 0
    # Timeouts and drops are not failed handshakes: they slow no one.
    for _ in range(10 * FREE_FAILURES):
        refusals.refused("10.0.0.4", "no handshake within 1s", failed_handshake=False)
    assert refusals.delay("10.0.0.4") == 0
    clock.now = 10.0
    assert refusals.delay("10.0.0.2") == 0  # a new interval, a clean slate


# --- the budget in the relay -----------------------------------------------------------------


async def admit_on_b(
    stream: trio.abc.Stream, first_message_opened: Callable[[], None]
) -> trio.abc.AsyncResource | str:
    """An admission that waits for one byte: b admits, anything else refuses."""
    byte = await stream.receive_some(1)
    if byte == b"b":
        first_message_opened()
        return stream
    return "not b"


async def echo_upstream(path: Path, nursery: trio.Nursery) -> Hop:
    listener = RawSocketListener(listening_socket(socket.AF_UNIX, str(path), 64))

    async def echo(stream: trio.abc.Stream) -> None:
        async with stream:
            while data := await stream.receive_some():
                await stream.send_all(data)

    nursery.start_soon(trio.serve_listeners, echo, [listener])
    return Hop(UnixEndpoint(str(path)), "the upstream", "start it")


async def test_silent_connections_hold_no_slot_and_go_at_the_deadline(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        hop = await echo_upstream(tmp_path / "up.sock", nursery)
        relay = Relay.for_links(
            hop_connector(hop),
            admit=admit_on_b,
            max_connections=1,
            pending=PendingHandshakes(limit=4),
        )
        front = RawSocketListener(listening_socket(socket.AF_INET, ("127.0.0.1", 0), 64))
        port = front.socket.getsockname()[1]
        await nursery.start(relay.serve, [front])
        silent = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(10)]
        await trio.testing.wait_all_tasks_blocked()
        # Ten silent connections, one slot: a peer with the key still gets in...
        async with await trio.open_tcp_stream("127.0.0.1", port) as user:
            await user.send_all(b"bhello")
            assert await user.receive_some() == b"hello"
        # ...and the silent ones end: dropped for newer ones, or at the deadline.
        started = trio.current_time()
        for stream in silent:
            assert await stream.receive_some() == b""
            await stream.aclose()
        assert trio.current_time() - started <= 1.0
        nursery.cancel_scope.cancel()


async def test_a_refused_connection_is_closed_and_the_relay_serves_on(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        hop = await echo_upstream(tmp_path / "up.sock", nursery)
        relay = Relay.for_links(hop_connector(hop), admit=admit_on_b)
        front = RawSocketListener(listening_socket(socket.AF_INET, ("127.0.0.1", 0), 64))
        port = front.socket.getsockname()[1]
        await nursery.start(relay.serve, [front])
        with trio.fail_after(10):
            async with await trio.open_tcp_stream("127.0.0.1", port) as stranger:
                await stranger.send_all(b"x")
                assert await stranger.receive_some() == b""
            async with await trio.open_tcp_stream("127.0.0.1", port) as user:
                await user.send_all(b"bok")
                assert await user.receive_some() == b"ok"
        nursery.cancel_scope.cancel()
