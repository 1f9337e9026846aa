"""The relay core shared by both halves: accept, connect the next hop, copy.

Both halves are this one relay with different endpoints: the WSL2 half accepts
on a Unix socket and connects over TCP to the Windows half; the Windows half
accepts on TCP and connects to Tailscale's LocalAPI.

On the Windows half a connection is first admitted (the peer's subnet and the
link handshake, `link/admission.py`) under a budget of its own: it takes a
connection slot only once admitted, and handshakes under way are few and short
(`pending.py`), so connections that never finish one cannot lock anyone out.
An admitted connection carries one client connection, or one after another:
the sessions of a link (`link/sessions.py`, `link/sealed.py`). For each, the relay opens the
upstream (the WSL2 half takes a ready, authenticated link, `warm.py`, as a
session; the Windows half waits for the client's first byte), then copies both
directions concurrently (`pump.py`), the second in a task beside the connection's.
Connections and second directions are jobs for spare tasks (`spare_tasks.py`):
a task that finishes one takes the next, instead of a new task and a nursery.
The relay never looks inside the bytes, so HTTP upgrades (`tailscale nc`),
endless streams (`watch-ipn-bus`) and large uploads (Taildrop) pass untouched.
An EOF in one direction is passed on as a half-close (a client that shuts its
write side still receives its whole answer); an error in either direction ends
both, because a half-dead relay connection helps nobody. When the upstream
cannot be opened at all, the client gets an HTTP 502 naming the hop that failed
(`bad_gateway.py`).

A WSL2 half run with `--insecure-no-auth` may meet a peer that does not relay
sessions (a Windows half that expects the handshake, a web server): its first
bytes are no frame (`LinkOutOfStep`), and the client gets the 502 naming the
mismatch instead of those bytes. A sealed link that fails its check or breaks
(`LinkFailed`) before any byte of the answer was passed on gets the client a
502 that says so too.

Concurrency is capped: past `max_connections` the relay stops accepting until a
connection ends, so a flood queues in the kernel's backlog instead of exhausting
file descriptors. Shutdown stops accepting at once and gives connections in
flight a grace period before cancelling them.

Faults stay local: an unexpected error in one connection is logged with its
cause and ends that connection only, never the relay and the others with it.

The log says what a user can act on, once: a failure that repeats (the next hop
down, a link out of step) is logged when it first happens and again only when it
changes, with how often it happened (`RepeatedFailures`); refused peers are
logged per peer and interval, with a count (`pending.RefusalLog`). With `-v` each client
connection gets one line when it ends: where it was relayed, the bytes each
way, how it ended and how long it took (`_Trace`); without `-v` none of that is
measured.
"""

import errno
import logging
import socket
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from functools import partial

import trio

from tailscale_wsl2.link.sealed import LinkFailed, LinkTampered
from tailscale_wsl2.link.sessions import FirstByte, LinkOutOfStep
from tailscale_wsl2.net.connect import Connector, UpstreamUnavailable
from tailscale_wsl2.net.pump import OneWay, Spares, Tally
from tailscale_wsl2.net.sockets import PEER_GONE, RawSocketStream, send_now
from tailscale_wsl2.relay.bad_gateway import answer_bad_gateway, bad_gateway_response
from tailscale_wsl2.relay.pending import PendingHandshakes, RefusalLog
from tailscale_wsl2.relay.spare_tasks import JoinableJob, SpareTask, SpareTasks

__all__ = [
    "Admission",
    "Relay",
    "RepeatedFailures",
    "Sessions",
    "UpstreamAtOnce",
    "copy_both_ways",
    "whole_connection",
]

log = logging.getLogger(__name__)

# accept() fails like this when the process or system runs out of descriptors
# or memory; waiting a moment (as trio's serve_listeners does) lets other
# connections finish and free them, where raising would stop the whole relay.
ACCEPT_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
ACCEPT_RETRY_DELAY = 0.1
# Past this many open connections the relay stops accepting (the kernel's backlog queues the
# rest) instead of running out of file descriptors.
DEFAULT_MAX_CONNECTIONS = 1024
# How long connections in flight may finish after shutdown begins.
DEFAULT_GRACE_PERIOD = 2.0


class RepeatedFailures:
    """One kind of failure (the next hop's), logged once per change.

    A failure is logged when it first happens; the same one again only counts. When another
    comes, or the failures stop (`succeeded`), a line says how often the last one happened.
    """

    def __init__(self, recovered: str | None) -> None:
        self._recovered = recovered  # the line for the end of a run of failures, if any
        self._last: str | None = None
        self._count = 0

    def failed(self, message: str) -> None:
        if message == self._last:
            self._count += 1
            return
        self._close_run()
        self._last, self._count = message, 1
        log.warning("%s", message)

    def succeeded(self) -> None:
        if self._last is not None:  # the common case costs this one test
            self._close_run()
            if self._recovered:
                log.info("%s", self._recovered)
            self._last = None

    def stop(self) -> None:
        """At shutdown: how often the last failure happened, if it still does."""
        self._close_run()
        self._last = None

    def _close_run(self) -> None:
        if self._count > 1:
            log.warning("(the failure above happened %d times in all)", self._count)
        self._count = 0


CLEAN_END = "ended cleanly"


def _how_it_ended(exc: BaseException) -> str:
    return f"ended: {exc}" if str(exc) else f"ended: {type(exc).__name__}"


def _peer_of(client: trio.abc.Stream) -> str:
    """` from ADDRESS` for a client that came over TCP (a link); nothing for a Unix socket."""
    sock = getattr(client, "socket", None)
    if not isinstance(sock, socket.socket) or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return ""
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return ""
    return f" from {host}:{port}"


@dataclass
class _Trace:
    """What the `-v` line of one client connection says, gathered as it runs."""

    number: int
    peer: str
    started: float
    ways: tuple[Tally, Tally] | None = None
    ended: str = CLEAN_END

    def end(self, how: str) -> None:
        if self.ended == CLEAN_END:  # the first cause is the one to tell
            self.ended = how

    def line(self, upstream: str) -> str:
        sent, received = (way.moved for way in self.ways) if self.ways else (0, 0)
        milliseconds = (trio.current_time() - self.started) * 1000
        return (
            f"connection {self.number}{self.peer}: relayed to {upstream}, {sent} bytes there, "
            f"{received} bytes back, {self.ended}, {milliseconds:.1f} ms"
        )


def _answer_502(client: trio.abc.Stream, message: str) -> None:
    """A 502 to a client that has received nothing yet and has sent its request.

    Sent without waiting (a small answer into an empty socket buffer), so that the end of
    the other direction, which cancels this task, cannot cut it short."""
    if not isinstance(client, RawSocketStream):
        return  # the relay's clients are sockets; nothing else can be answered so
    try:
        send_now(client.socket, bad_gateway_response(message))
        client.socket.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the client left first


async def copy_both_ways(
    a: trio.abc.Stream, b: trio.abc.Stream, here: SpareTask, spares: Spares
) -> None:
    """Copy a->b and b->a until both directions end; a failure in one ends both.

    a->b runs in this task, b->a in a spare task beside it (`spare_tasks.py`).
    `here` is this task: a failure of b->a while a->b still runs ends it.
    """
    a_to_b = OneWay(a, b, spares)
    # What `a` has sent already (on a new connection, its request) goes on
    # before the other direction is handed to its task: when that meant a new
    # task and a nursery, their set-up was a measurable part of every request's
    # latency in each half (bench/NOTEBOOK.md).
    a_to_b.forward_ready()
    await _copy_both_ways_after(a_to_b, here)


def _log_end(exc: BaseException) -> None:
    """How a direction ended, in the log: a tampered link loudly, a fault with its cause."""
    if isinstance(exc, LinkTampered):
        log.warning("%s", exc)
    elif isinstance(exc, PEER_GONE):
        log.debug("connection ended: %r", exc)
    else:
        log.error(
            "a connection failed (%r); it is closed, the relay goes on",
            exc,
            exc_info=log.isEnabledFor(logging.DEBUG),
        )


def _upstream_failed(
    exc: Exception,
    client: trio.abc.Stream,
    failures: RepeatedFailures | None,
    trace: _Trace | None,
) -> None:
    """The end of the upstream's direction: a link out of step, or a sealed link that failed
    before any byte of its answer came, still gets the client a 502 that names it."""
    _log_end(exc)
    if isinstance(exc, LinkOutOfStep):
        if trace is not None:
            trace.end("answered 502: the peer does not relay sessions")
        if failures is not None:
            failures.failed(str(exc))
        _answer_502(client, str(exc))
    elif isinstance(exc, LinkFailed) and not exc.delivered:
        if trace is not None:
            trace.end(f"answered 502: {exc}")
        _answer_502(client, f"the link between the halves of tailscale-wsl2 failed: {exc}")
    elif trace is not None:
        trace.end(_how_it_ended(exc))


async def _copy_both_ways_after(
    a_to_b: OneWay,
    here: SpareTask,
    failures: RepeatedFailures | None = None,
    trace: _Trace | None = None,
) -> None:
    """`copy_both_ways`, once `a_to_b.forward_ready()` has run; `b` is the upstream.

    `failures` hears of a link out of step; `trace` (with -v) of the bytes and the end."""
    b_to_a = a_to_b.reversed()
    if trace is not None:
        trace.ways = (a_to_b, b_to_a)
    a_to_b_running = True

    async def copy_back() -> None:
        try:
            await b_to_a.copy()
        except Exception as exc:
            _upstream_failed(exc, b_to_a.dst, failures, trace)
            # Only while a->b runs: once it is over, ending this task would end
            # what it does next (on the Windows half, the link's next session).
            if a_to_b_running:
                here.cancel_scope.cancel()

    other_way = JoinableJob(copy_back)
    here.tasks.run_soon(other_way)
    try:
        await a_to_b.copy()
    except Exception as exc:
        _log_end(exc)
        if trace is not None:
            trace.end(_how_it_ended(exc))
        other_way.end()
    a_to_b_running = False
    await other_way.join()


# Decides whether an accepted connection may be relayed: what to relay (the connection
# itself, or the link its handshake made), or why not. Its second argument is called
# once the peer has shown a first message that opens (`pending.py`).
Admission = Callable[[trio.abc.Stream, Callable[[], None]], Awaitable[trio.abc.AsyncResource | str]]

# An upstream that is open already and costs no wait to take (the WSL2 half's
# warm link), or None when there is none at the moment.
UpstreamAtOnce = Callable[[], trio.abc.Stream | None]

# The client connections an accepted connection carries, one after another:
# itself, or the sessions on a link between the halves (`sessions.py`). The
# second argument waits for the next bytes, as `Relay` is configured to.
Sessions = Callable[[trio.abc.AsyncResource, FirstByte], AsyncGenerator[trio.abc.Stream, None]]


async def whole_connection(
    client: trio.abc.AsyncResource, first_byte: FirstByte
) -> AsyncGenerator[trio.abc.Stream, None]:
    """An accepted connection that carries one client connection: itself."""
    assert isinstance(client, trio.abc.Stream)
    await first_byte(client)
    yield client


def peer_name(stream: trio.abc.Stream) -> str:
    """Who is at the other end of an accepted connection, for the handshake budget."""
    sock = getattr(stream, "socket", None)
    if not isinstance(sock, socket.socket) or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return "a local peer"
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return "a peer that left at once"


async def _at_once(client: trio.abc.Stream) -> None:
    """The WSL2 half's first-byte wait: none, its next hop is a warm link, which
    costs nothing to take."""


async def _first_bytes(client: trio.abc.Stream) -> None:
    """Wait until the client speaks (or leaves) before opening the upstream.

    Every client of this relay speaks first (HTTP), so nothing is lost by
    waiting, and a connection that is opened and left idle (a warm link, a
    port scan) costs the next hop nothing. The Windows half does this.
    """
    if isinstance(client, RawSocketStream):
        await trio.lowlevel.wait_readable(client.socket)


class Relay:
    """Accept on some listeners, relay each admitted connection to one upstream.

    Two roles, one per half, each made by its own constructor:
    - `for_clients` (the WSL2 half): every accepted connection is one client; its upstream is
      opened at once, taken without a wait from `upstream_at_once` when that has one ready.
    - `for_links` (the Windows half): an accepted connection is first admitted (`admit`), then
      carries client connections one after another (`sessions`); each one's upstream is opened
      only when its client speaks.
    """

    def __init__(
        self,
        connect_upstream: Connector,
        *,
        upstream_at_once: UpstreamAtOnce | None,
        admit: Admission | None,
        sessions: Sessions,
        serves_links: bool,
        max_connections: int,
        grace_period: float,
        upstream_name: str,
        pending: PendingHandshakes | None = None,
        refusals: RefusalLog | None = None,
    ) -> None:
        self._connect_upstream = connect_upstream
        self._upstream_name = upstream_name
        self._upstream_failures = RepeatedFailures(f"{upstream_name} can be reached again")
        # Per-connection lines (-v) cost a clock read and a record per connection: only then.
        self._traced = log.isEnabledFor(logging.DEBUG)
        self._traces_started = 0
        self._upstream_at_once = upstream_at_once
        self._admit = admit
        self._sessions = sessions
        self._serves_links = serves_links
        self._free_slots = trio.Semaphore(max_connections)
        self._spares = Spares()
        self._grace_period = grace_period
        self._accepting = trio.CancelScope()
        self._pending = pending or PendingHandshakes()
        self._refusals = refusals or RefusalLog()
        self.active_connections = 0
        # The scopes of connections waiting for their client's next byte: nothing
        # is in flight on them, so shutdown closes them at once instead of
        # letting them (the WSL2 half's warm links, say) hold up the grace period.
        self._silent: set[trio.CancelScope] = set()

    @classmethod
    def for_clients(
        cls,
        connect_upstream: Connector,
        *,
        upstream_at_once: UpstreamAtOnce | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        grace_period: float = DEFAULT_GRACE_PERIOD,
        upstream_name: str = "the upstream",
    ) -> "Relay":
        """The WSL2 half's relay: one client per connection, its upstream opened at once."""
        return cls(
            connect_upstream,
            upstream_at_once=upstream_at_once,
            admit=None,
            sessions=whole_connection,
            serves_links=False,
            max_connections=max_connections,
            grace_period=grace_period,
            upstream_name=upstream_name,
        )

    @classmethod
    def for_links(
        cls,
        connect_upstream: Connector,
        *,
        admit: Admission | None = None,
        sessions: Sessions = whole_connection,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        grace_period: float = DEFAULT_GRACE_PERIOD,
        upstream_name: str = "the upstream",
        pending: PendingHandshakes | None = None,
        refusals: RefusalLog | None = None,
    ) -> "Relay":
        """The Windows half's relay: links admitted under the handshake budget (`pending`,
        `refusals`), whose sessions open the upstream when their client first speaks."""
        return cls(
            connect_upstream,
            upstream_at_once=None,
            admit=admit,
            sessions=sessions,
            serves_links=True,
            max_connections=max_connections,
            grace_period=grace_period,
            upstream_name=upstream_name,
            pending=pending,
            refusals=refusals,
        )

    def stop_accepting(self) -> None:
        """Begin shutdown: close the listeners, handshakes under way and silent
        connections; `serve` returns once the rest finish or the grace period ends."""
        self._accepting.cancel()
        self._pending.cancel_all()
        for waiting in self._silent:
            waiting.cancel()

    async def _client_spoke(self, connection: trio.CancelScope, client: trio.abc.Stream) -> None:
        """Wait for the client's next byte (or EOF); shutdown meanwhile cancels `connection`."""
        self._silent.add(connection)
        try:
            await _first_bytes(client)
        finally:
            self._silent.discard(connection)

    async def serve(
        self,
        listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            await self._serve(listeners, task_status)
        finally:  # however it ends, a run of failures gets its count
            self._upstream_failures.stop()

    async def _serve(
        self,
        listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
        task_status: trio.TaskStatus[None],
    ) -> None:
        async with trio.open_nursery() as connections:
            spare_tasks = SpareTasks(connections)
            with self._accepting:
                async with trio.open_nursery() as acceptors:
                    for listener in listeners:
                        acceptors.start_soon(self._accept_forever, listener, spare_tasks)
                    if self._serves_links:
                        acceptors.start_soon(self._refusals.report_every_interval)
                    task_status.started()
            spare_tasks.close()  # connections in flight go on; no task waits for new ones
            if self.active_connections:
                log.info(
                    "waiting up to %gs for %d connection(s)",
                    self._grace_period,
                    self.active_connections,
                )
            connections.cancel_scope.deadline = trio.current_time() + self._grace_period
        self._spares.close()

    async def _accept_forever(
        self, listener: trio.abc.Listener[trio.abc.Stream], spare_tasks: SpareTasks
    ) -> None:
        async with listener:
            while True:
                if self._serves_links:
                    await self._until_a_slot_is_free()
                else:
                    try:
                        # Without waiting when a slot is free: acquire() would pass
                        # through the scheduler twice for every connection.
                        self._free_slots.acquire_nowait()
                    except trio.WouldBlock:
                        await self._free_slots.acquire()
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if not self._serves_links:
                        self._free_slots.release()
                    if exc.errno not in ACCEPT_RESOURCE_ERRNOS:
                        raise
                    log.warning("accept failed (%s); retrying", exc.strerror)
                    await trio.sleep(ACCEPT_RETRY_DELAY)
                    continue
                except BaseException:
                    if not self._serves_links:
                        self._free_slots.release()
                    raise
                if self._serves_links:
                    spare_tasks.run_soon(partial(self._admit_link, stream))
                    # Handshakes under way move on between accepts: a flood of new
                    # connections must not keep a real one from finishing its own.
                    await trio.lowlevel.checkpoint()
                else:
                    spare_tasks.run_soon(
                        partial(self._relay_client, stream, self._upstream_now(stream))
                    )

    async def _until_a_slot_is_free(self) -> None:
        """Wait while admitted connections hold every slot (pending ones hold none)."""
        if not self._free_slots.value:
            await self._free_slots.acquire()
            self._free_slots.release()

    def _upstream_now(self, client: trio.abc.Stream) -> OneWay | None:
        """The client's direction to an upstream that costs no wait, with what the
        client has sent already sent on, here in the accepting task: a request's
        latency then does not include handing its connection to a task (when that
        meant starting one, a measurable part of the WSL2 half's). None when
        there is no such upstream."""
        if self._upstream_at_once is None or (upstream := self._upstream_at_once()) is None:
            return None
        client_to_upstream = OneWay(client, upstream, self._spares)
        client_to_upstream.forward_ready()
        return client_to_upstream

    def _trace(self, client: trio.abc.Stream) -> _Trace | None:
        if not self._traced:
            return None
        self._traces_started += 1
        return _Trace(self._traces_started, _peer_of(client), trio.current_time())

    def _log_trace(self, trace: _Trace | None) -> None:
        if trace is not None:
            log.debug("%s", trace.line(self._upstream_name))

    async def _relay_client(
        self, client: trio.abc.Stream, client_to_upstream: OneWay | None, here: SpareTask
    ) -> None:
        """The WSL2 half: one client connection, its slot taken by the accepting task."""
        self.active_connections += 1
        try:
            async with client:
                if client_to_upstream is not None:
                    self._upstream_failures.succeeded()
                    async with client_to_upstream.dst:
                        await self._copy_traced(client_to_upstream, here, self._trace(client))
                    return
                await self._relay_sessions(client, _at_once, here)
        except Exception as exc:
            _log_end(exc)
        finally:
            self.active_connections -= 1
            self._free_slots.release()

    async def _admit_link(self, stream: trio.abc.Stream, here: SpareTask) -> None:
        """The Windows half: admit a new connection under the handshake budget, then, with a
        slot of its own, relay what it carries."""
        async with stream:
            admitted = await self._admit_within_budget(stream)
            if isinstance(admitted, str):
                return
            try:
                self._free_slots.acquire_nowait()
            except trio.WouldBlock:
                await self._free_slots.acquire()
            self.active_connections += 1
            try:
                # Shutdown ends a silent connection through its task's scope.
                first_byte = partial(self._client_spoke, here.cancel_scope)
                await self._relay_sessions(admitted, first_byte, here)
            except Exception as exc:
                _log_end(exc)
            finally:
                self.active_connections -= 1
                self._free_slots.release()

    async def _admit_within_budget(self, stream: trio.abc.Stream) -> trio.abc.AsyncResource | str:
        """What `admit` makes of `stream`, or why it was refused (logged and counted)."""
        if self._admit is None:
            return stream
        peer = peer_name(stream)
        pending = self._pending.add(peer)
        verdict: trio.abc.AsyncResource | str | None = None
        try:
            with pending.scope:
                if delay := self._refusals.delay(peer):
                    await trio.sleep(delay)
                verdict = await self._admit(stream, pending.first_message_opened)
        except Exception as exc:
            _log_end(exc)
            verdict = f"its handshake failed ({exc!r})"
        finally:
            self._pending.remove(pending)
        if verdict is None:  # cancelled: dropped, past the deadline, or shutting down
            if self._accepting.cancel_called:
                return "shutting down"
            reason = (
                "dropped for newer connections: too many handshakes under way"
                if pending.dropped
                else f"no handshake within {self._pending.deadline:g}s"
            )
            self._refusals.refused(peer, reason, failed_handshake=False)
            return reason
        if isinstance(verdict, str):
            self._refusals.refused(peer, verdict, failed_handshake=True)
        return verdict

    async def _relay_sessions(
        self, client: trio.abc.AsyncResource, first_byte: FirstByte, here: SpareTask
    ) -> None:
        async with aclosing(self._sessions(client, first_byte)) as sessions:
            async for session in sessions:
                await self._relay_session(session, here)

    async def _relay_session(self, client: trio.abc.Stream, here: SpareTask) -> None:
        trace = self._trace(client)
        try:
            upstream = await self._connect_upstream()
        except UpstreamUnavailable as exc:
            self._upstream_failures.failed(str(exc))
            await answer_bad_gateway(client, str(exc))
            if trace is not None:
                trace.end("answered 502: the upstream could not be reached")
                self._log_trace(trace)
            return
        self._upstream_failures.succeeded()
        async with upstream:
            a_to_b = OneWay(client, upstream, self._spares)
            a_to_b.forward_ready()  # as `copy_both_ways` does, and why
            await self._copy_traced(a_to_b, here, trace)

    async def _copy_traced(self, a_to_b: OneWay, here: SpareTask, trace: _Trace | None) -> None:
        """Both directions, with the -v line at the end, however the copy ends."""
        try:
            await _copy_both_ways_after(a_to_b, here, self._upstream_failures, trace)
        except BaseException as exc:
            if trace is not None:
                trace.end("cancelled" if isinstance(exc, trio.Cancelled) else _how_it_ended(exc))
            raise
        finally:
            self._log_trace(trace)
