"""The relay core, in-process over real Unix sockets."""

import logging
import os
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tailscale_wsl2.link.sessions import LinkSession
from tailscale_wsl2.net.connect import Hop, UpstreamUnavailable, hop_connector, open_stream
from tailscale_wsl2.net.endpoints import UnixEndpoint
from tailscale_wsl2.net.pump import Spares
from tailscale_wsl2.net.sockets import RawSocketListener, RawSocketStream, listening_socket
from tailscale_wsl2.relay.core import Relay, RepeatedFailures, copy_both_ways
from tailscale_wsl2.relay.spare_tasks import SpareTask, SpareTasks

Handler = Callable[[trio.SocketStream], Awaitable[None]]


async def unix_listener(path: Path) -> RawSocketListener:
    return RawSocketListener(listening_socket(socket.AF_UNIX, str(path), 128))


@asynccontextmanager
async def upstream_server(path: Path, handler: Handler) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, [await unix_listener(path)])
        yield
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def running_relay(tmp_path: Path, relay: Relay) -> AsyncIterator[UnixEndpoint]:
    front = tmp_path / "front.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.serve, [await unix_listener(front)])
        yield UnixEndpoint(str(front))
        nursery.cancel_scope.cancel()


def relay_to(path: Path, *, max_connections: int = 1024, grace_period: float = 2.0) -> Relay:
    hop = Hop(UnixEndpoint(str(path)), "the test upstream", "start it")
    return Relay.for_clients(
        hop_connector(hop), max_connections=max_connections, grace_period=grace_period
    )


async def answer_after_eof(stream: trio.SocketStream) -> None:
    """Read the whole request (to EOF), then answer with its size and reversed bytes."""
    received = bytearray()
    while chunk := await stream.receive_some():
        received += chunk
    await stream.send_all(b"%d:" % len(received) + bytes(reversed(received)))
    await stream.aclose()


async def echo(stream: trio.SocketStream) -> None:
    try:
        while chunk := await stream.receive_some():
            await stream.send_all(chunk)
    except trio.BrokenResourceError:
        pass


async def receive_all(stream: trio.abc.Stream) -> bytes:
    received = bytearray()
    while chunk := await stream.receive_some():
        received += chunk
    return bytes(received)


async def test_half_close_still_delivers_the_whole_answer(tmp_path: Path) -> None:
    request = os.urandom(3 * 1024 * 1024)
    async with (
        upstream_server(tmp_path / "up.sock", answer_after_eof),
        running_relay(tmp_path, relay_to(tmp_path / "up.sock")) as front,
        await open_stream(front) as client,
    ):
        assert isinstance(client, trio.abc.HalfCloseableStream)
        await client.send_all(request)
        await client.send_eof()
        answer = await receive_all(client)
    assert answer == b"%d:" % len(request) + bytes(reversed(request))


async def test_bytes_pass_both_ways_byte_exact(tmp_path: Path) -> None:
    payload = os.urandom(8 * 1024 * 1024)
    async with (
        upstream_server(tmp_path / "up.sock", echo),
        running_relay(tmp_path, relay_to(tmp_path / "up.sock")) as front,
    ):
        client = await open_stream(front)
        received = bytearray()

        async def read_back() -> None:
            while len(received) < len(payload):
                received.extend(await client.receive_some())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_back)
            await client.send_all(payload)
        await client.aclose()
    assert bytes(received) == payload


async def test_upstream_down_answers_502_naming_the_hop(tmp_path: Path) -> None:
    async with (
        running_relay(tmp_path, relay_to(tmp_path / "nobody.sock")) as front,
        await open_stream(front) as client,
    ):
        await client.send_all(b"GET /localapi/v0/status HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await receive_all(client)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert b"Content-Length: %d" % len(body) in head
    assert body.count(b"\n") == 1
    assert b"the test upstream is not reachable at" in body
    assert b"no such socket or pipe" in body
    assert body.endswith(b"start it\n")


async def copy_here(a: trio.abc.Stream, b: trio.abc.Stream) -> bool:
    """`copy_both_ways` in this task, as a relay's task runs it; whether the copy
    cancelled this task's scope (the way it ends the task's part)."""
    async with trio.open_nursery() as nursery:
        spare_tasks = SpareTasks(nursery)
        with trio.CancelScope() as scope:
            await copy_both_ways(a, b, SpareTask(spare_tasks, scope), Spares())
        spare_tasks.close()
    return scope.cancel_called


async def test_an_error_on_one_side_closes_both() -> None:
    client_end, relay_front = trio.testing.memory_stream_pair()
    relay_back, upstream_end = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(copy_here, relay_front, relay_back)
        await client_end.send_all(b"hello")
        assert await upstream_end.receive_some() == b"hello"
        await upstream_end.aclose()  # the upstream dies
        await client_end.send_all(b"more")  # the relay fails writing this upstream
        # ...and so ends the client's side too instead of leaving it half-dead.
        with trio.fail_after(5):
            assert await client_end.receive_some() == b""


async def test_a_waiting_request_goes_on_before_the_other_direction_is_set_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, relay_front = socket.socketpair()
    relay_back, upstream = socket.socketpair()
    request = b"GET /localapi/v0/status HTTP/1.1\r\n\r\n"
    client.sendall(request)
    client.shutdown(socket.SHUT_WR)
    upstream.shutdown(socket.SHUT_WR)  # both directions end once the request is through
    upstream.setblocking(False)
    upstream_had: list[bytes] = []
    run_soon = SpareTasks.run_soon

    def run_soon_noting_what_upstream_has(self: SpareTasks, job: Any) -> None:
        upstream_had.append(upstream.recv(100))  # BlockingIOError if nothing is there yet
        run_soon(self, job)

    monkeypatch.setattr(SpareTasks, "run_soon", run_soon_noting_what_upstream_has)
    with trio.fail_after(10):
        await copy_here(RawSocketStream(relay_front), RawSocketStream(relay_back))
    assert upstream_had == [request]
    for sock in (client, relay_front, relay_back, upstream):
        sock.close()


class GoneClient(trio.abc.Stream):
    """A client that can no longer be written to; it still sends nothing, or has
    ended its side (`said_all`)."""

    def __init__(self, *, said_all: bool) -> None:
        self._said_all = said_all

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if not self._said_all:
            await trio.sleep_forever()
        return b""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        raise trio.BrokenResourceError("the client went away")

    async def wait_send_all_might_not_block(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


async def copy_then_answer(client: trio.abc.Stream) -> bool:
    """`copy_here` from `client` to an upstream that answers once all is waiting."""
    relay_back, upstream_end = trio.testing.memory_stream_pair()

    async def answer() -> None:
        await trio.testing.wait_all_tasks_blocked()
        await upstream_end.send_all(b"HTTP/1.1 200 OK\r\n\r\n")

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer)
            return await copy_here(client, relay_back)


async def test_a_failure_copying_back_ends_the_copy_forward() -> None:
    # The answer cannot be delivered while the client's side is still open: the
    # copy from the client, which would wait for ever, is ended with the task.
    assert await copy_then_answer(GoneClient(said_all=False))


async def test_a_failure_copying_back_after_the_copy_forward_leaves_the_task_alone() -> None:
    # The client's side ended first; the task has moved on (on a link, to its
    # next session) by the time the answer fails, and must not be ended.
    assert not await copy_then_answer(GoneClient(said_all=True))


class UpstreamsAtOnce:
    """Upstreams ready without waiting: socket pairs, while `ready` lasts."""

    def __init__(self, ready: int) -> None:
        self.ready = ready
        self.far_ends: list[socket.socket] = []

    def __call__(self) -> RawSocketStream | None:
        if not self.ready:
            return None
        self.ready -= 1
        near, far = socket.socketpair()
        self.far_ends.append(far)
        return RawSocketStream(near)


async def test_an_upstream_at_once_gets_the_request_from_the_accepting_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at_once = UpstreamsAtOnce(ready=1)
    hop = Hop(UnixEndpoint(str(tmp_path / "nobody.sock")), "the test upstream", "start it")
    relay = Relay.for_clients(hop_connector(hop), upstream_at_once=at_once)
    upstream_had: list[bytes] = []
    relay_connection = Relay._relay_client

    async def relay_connection_noting_what_upstream_has(self: Relay, *args: object) -> None:
        upstream_had.append(at_once.far_ends[0].recv(100, socket.MSG_DONTWAIT))
        await relay_connection(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Relay, "_relay_client", relay_connection_noting_what_upstream_has)
    request = b"GET /localapi/v0/status HTTP/1.1\r\n\r\n"
    front = tmp_path / "front.sock"
    client = socket.socket(socket.AF_UNIX)
    async with trio.open_nursery() as nursery:
        listener = await unix_listener(front)
        client.connect(str(front))
        client.sendall(request)  # before the relay even accepts
        await nursery.start(relay.serve, [listener])
        with trio.fail_after(10):
            while not upstream_had:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert upstream_had == [request]  # there before the connection's own task began
    client.close()
    for far in at_once.far_ends:
        far.close()


async def test_without_an_upstream_at_once_the_relay_connects_as_usual(tmp_path: Path) -> None:
    hop = Hop(UnixEndpoint(str(tmp_path / "up.sock")), "the test upstream", "start it")
    at_once = UpstreamsAtOnce(ready=0)
    relay = Relay.for_clients(hop_connector(hop), upstream_at_once=at_once)
    async with (
        upstream_server(tmp_path / "up.sock", answer_after_eof),
        running_relay(tmp_path, relay) as front,
        await open_stream(front) as client,
    ):
        assert isinstance(client, trio.abc.HalfCloseableStream)
        await client.send_all(b"abc")
        await client.send_eof()
        assert await receive_all(client) == b"3:cba"


@pytest.mark.parametrize(
    "other",
    [{"admit": lambda stream: None}, {"sessions": lambda c, f: None}],
    ids=["admission", "sessions"],
)
def test_an_upstream_at_once_is_only_for_a_relay_that_connects_at_once(
    other: dict[str, Any],
) -> None:
    # The relay that takes an upstream at once (the WSL2 half's) has no admission and no
    # sessions: its constructor does not accept them, and the other role takes no upstream
    # at once.
    connector = hop_connector(Hop(UnixEndpoint("x"), "x", "x"))
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        Relay.for_clients(connector, upstream_at_once=lambda: None, **other)
    with pytest.raises(TypeError, match="unexpected keyword argument 'upstream_at_once'"):
        Relay.for_links(connector, upstream_at_once=lambda: None)  # type: ignore[call-arg]


async def test_connections_past_the_cap_wait_for_a_free_slot(tmp_path: Path) -> None:
    accepted: list[trio.SocketStream] = []
    release = trio.Event()

    async def hold(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        await release.wait()
        await stream.aclose()

    relay = relay_to(tmp_path / "up.sock", max_connections=2)
    async with (
        upstream_server(tmp_path / "up.sock", hold),
        running_relay(tmp_path, relay) as front,
    ):
        clients = [await open_stream(front) for _ in range(3)]
        for client in clients:
            await client.send_all(b"GET")  # the upstream is opened once the client speaks
        await trio.testing.wait_all_tasks_blocked(0.05)
        assert len(accepted) == 2
        assert relay.active_connections == 2
        await clients[0].aclose()
        release.set()
        with trio.fail_after(5):
            while len(accepted) < 3:
                await trio.sleep(0.01)
        for client in clients[1:]:
            await client.aclose()


async def test_shutdown_lets_connections_in_flight_finish(tmp_path: Path) -> None:
    relay = relay_to(tmp_path / "up.sock", grace_period=5.0)
    async with upstream_server(tmp_path / "up.sock", answer_after_eof):
        front = tmp_path / "front.sock"
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.serve, [await unix_listener(front)])
            client = await open_stream(UnixEndpoint(str(front)))
            await client.send_all(b"abc")
            await trio.testing.wait_all_tasks_blocked(0.05)
            relay.stop_accepting()
            await trio.testing.wait_all_tasks_blocked(0.05)
            with pytest.raises(ConnectionRefusedError):  # the listener is closed
                await open_stream(UnixEndpoint(str(front)))
            assert isinstance(client, trio.abc.HalfCloseableStream)
            await client.send_eof()
            assert await receive_all(client) == b"3:cba"
            await client.aclose()


async def test_shutdown_cancels_what_outlives_the_grace_period(tmp_path: Path) -> None:
    relay = relay_to(tmp_path / "up.sock", grace_period=0.2)
    async with upstream_server(tmp_path / "up.sock", echo):
        front = tmp_path / "front.sock"
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.serve, [await unix_listener(front)])
            client = await open_stream(UnixEndpoint(str(front)))
            await client.send_all(b"ping")
            assert await client.receive_some() == b"ping"
            relay.stop_accepting()
            with trio.fail_after(5):
                assert await client.receive_some() == b""  # closed by the relay
            await client.aclose()


async def test_connector_reports_refused_tcp_as_unreachable() -> None:
    from tailscale_wsl2.net.endpoints import TcpEndpoint  # noqa: PLC0415

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens on this port now
    hop = Hop(TcpEndpoint("127.0.0.1", port), "the Windows half", "run it")
    with pytest.raises(UpstreamUnavailable, match=r"connection refused\); run it$"):
        await hop_connector(hop)()


async def test_shutdown_closes_silent_connections_at_once(tmp_path: Path) -> None:
    hop = Hop(UnixEndpoint(str(tmp_path / "up.sock")), "the test upstream", "start it")
    relay = Relay.for_links(hop_connector(hop), grace_period=60)
    async with upstream_server(tmp_path / "up.sock", echo):
        front = tmp_path / "front.sock"
        with trio.fail_after(10):  # far less than the grace period
            async with trio.open_nursery() as nursery:
                await nursery.start(relay.serve, [await unix_listener(front)])
                async with await open_stream(UnixEndpoint(str(front))) as silent:
                    await trio.testing.wait_all_tasks_blocked(0.05)
                    assert relay.active_connections == 1
                    relay.stop_accepting()
                    assert await silent.receive_some() == b""  # closed, not kept waiting


async def test_shutdown_spares_a_connection_that_has_spoken(tmp_path: Path) -> None:
    # The wait for the first byte shares the connection's cancel scope; once the
    # client spoke, shutdown must leave the connection to its grace period.
    hop = Hop(UnixEndpoint(str(tmp_path / "up.sock")), "the test upstream", "start it")
    relay = Relay.for_links(hop_connector(hop), grace_period=60)
    async with upstream_server(tmp_path / "up.sock", echo):
        front = tmp_path / "front.sock"
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(relay.serve, [await unix_listener(front)])
                async with await open_stream(UnixEndpoint(str(front))) as client:
                    await trio.testing.wait_all_tasks_blocked(0.05)  # silent first
                    await client.send_all(b"ping")
                    assert await client.receive_some() == b"ping"
                    relay.stop_accepting()
                    await trio.testing.wait_all_tasks_blocked(0.05)
                    await client.send_all(b"still here")
                    assert await client.receive_some() == b"still here"


# --- faults stay local ------------------------------------------------------------------------


async def test_an_unexpected_error_ends_its_connection_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    up = tmp_path / "up.sock"
    connect = hop_connector(Hop(UnixEndpoint(str(up)), "the test upstream", "start it"))
    calls = 0

    async def fails_once() -> trio.abc.Stream:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in one connection")
        return await connect()

    relay = Relay.for_clients(fails_once)
    async with upstream_server(up, answer_after_eof), running_relay(tmp_path, relay) as front:
        with trio.fail_after(10):
            async with await open_stream(front) as first:
                assert await receive_all(first) == b""  # closed, nothing else
            async with await open_stream(front) as second:  # the relay goes on
                assert isinstance(second, trio.abc.HalfCloseableStream)
                await second.send_all(b"abc")
                await second.send_eof()
                assert await receive_all(second) == b"3:cba"
    [error] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "RuntimeError('a bug in one connection')" in error.getMessage()


# --- what the log says: repeated failures once, and with -v a line per connection -------------


def warnings_and_infos(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "tailscale_wsl2.relay.core" and record.levelno >= logging.INFO
    ]


async def ask(front: UnixEndpoint) -> bytes:
    async with await open_stream(front) as client:
        assert isinstance(client, trio.abc.HalfCloseableStream)
        await client.send_all(b"GET /localapi/v0/status HTTP/1.1\r\nHost: x\r\n\r\n")
        await client.send_eof()
        return await receive_all(client)


async def test_a_failing_upstream_is_logged_once_per_change_with_a_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    upstream = tmp_path / "up.sock"
    async with running_relay(tmp_path, relay_to(upstream)) as front:
        for _ in range(10):
            assert (await ask(front)).startswith(b"HTTP/1.1 502 ")
        async with upstream_server(upstream, answer_after_eof):
            assert (await ask(front)).startswith(b"45:")
    down = f"the test upstream is not reachable at {upstream} (no such socket or pipe); start it"
    assert warnings_and_infos(caplog) == [
        down,
        "(the failure above happened 10 times in all)",
        "the upstream can be reached again",
    ]


def test_a_new_failure_closes_the_count_of_the_last() -> None:
    failures = RepeatedFailures("back")
    with assert_logs() as lines:
        for message in ["a", "a", "a", "b", "b"]:
            failures.failed(message)
        failures.succeeded()
        failures.succeeded()  # nothing to end: nothing to say
        for _ in range(4):
            failures.failed("c")
        failures.stop()  # shutdown in the middle of a run: its count is not lost
    assert lines == [
        "a",
        "(the failure above happened 3 times in all)",
        "b",
        "(the failure above happened 2 times in all)",
        "back",
        "c",
        "(the failure above happened 4 times in all)",
    ]


@contextmanager
def assert_logs() -> Iterator[list[str]]:
    """The relay log's lines while the block runs."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("tailscale_wsl2.relay.core")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_with_verbose_each_connection_gets_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tailscale_wsl2.relay.core")
    upstream = tmp_path / "up.sock"
    async with (
        upstream_server(upstream, answer_after_eof),
        running_relay(tmp_path, relay_to(upstream)) as front,  # built with DEBUG on: traced
    ):
        await ask(front)
        await ask(front)
    lines = [
        record.getMessage()
        for record in caplog.records
        if record.getMessage().startswith("connection ")
    ]
    assert len(lines) == 2
    first = re.fullmatch(
        r"connection 1: relayed to the upstream, 45 bytes there, 48 bytes back, ended cleanly, "
        r"[0-9.]+ ms",
        lines[0],
    )
    assert first, lines[0]
    assert lines[1].startswith("connection 2: ")


async def test_without_verbose_no_connection_is_traced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    upstream = tmp_path / "up.sock"
    async with (
        upstream_server(upstream, answer_after_eof),
        running_relay(tmp_path, relay_to(upstream)) as front,
    ):
        await ask(front)
    assert not [r for r in caplog.records if r.getMessage().startswith("connection ")]


async def test_a_link_out_of_step_gets_the_client_a_502_with_its_explanation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    async def greets_like_a_windows_half(stream: trio.SocketStream) -> None:
        await stream.send_all(b"TSWSL\x01" + bytes(32))
        await trio.sleep_forever()

    upstream = tmp_path / "up.sock"
    hop = Hop(UnixEndpoint(str(upstream)), "the test upstream", "start it")

    async def as_session() -> trio.abc.Stream:
        link = await hop_connector(hop)()
        assert isinstance(link, RawSocketStream)
        return LinkSession(link, None, lambda received: f"mismatch: {received!r}; fix it")

    relay = Relay.for_clients(as_session)
    async with (
        upstream_server(upstream, greets_like_a_windows_half),
        running_relay(tmp_path, relay) as front,
    ):
        with trio.fail_after(10):
            answer = await ask(front)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert body == b"mismatch: b'TSWS'; fix it\n"
    assert "mismatch: b'TSWS'; fix it" in warnings_and_infos(caplog)


async def test_refused_peers_are_logged_once_with_a_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Refusals are counted per peer and interval (relay/pending.py, issue 16), not per change
    # like the next hop's failures: the first of each reason at once, the rest as a count.
    caplog.set_level(logging.INFO)

    async def refuse(stream: trio.abc.Stream, first_message_opened: Callable[[], None]) -> str:
        return "wrong key"

    hop = Hop(UnixEndpoint(str(tmp_path / "up.sock")), "the test upstream", "start it")
    relay = Relay.for_links(hop_connector(hop), admit=refuse)
    async with running_relay(tmp_path, relay) as front:
        for _ in range(5):
            async with await open_stream(front) as client:
                assert await receive_all(client) == b""  # refused: closed at once
    assert [
        record.getMessage()
        for record in caplog.records
        if record.name == "tailscale_wsl2.relay.pending"
    ] == [
        "refused a connection from a local peer: wrong key",
        "refused 4 more connection(s) from a local peer in the last 10s (the last: wrong key)",
    ]
