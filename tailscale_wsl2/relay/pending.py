"""The Windows half's budget for connections that have not finished their handshake.

Anything on the WSL switch can open connections to the Windows half, and a
connection costs nothing to open and leave silent. Were such connections to
hold the relay's connection slots (1,024) for the handshake's whole time, a
few thousand of them would lock every real WSL2 half out. So a connection
takes a slot only once admitted; until then it is *pending*, and pending
connections have a budget of their own:

- a deadline (`HANDSHAKE_DEADLINE`): the real WSL2 half, on the same machine,
  finishes in a round trip or two;
- a limit (`PENDING_LIMIT`) on those that have not yet shown a first message
  that opens: when a new connection would pass it, the oldest such connection
  of the peer that has the most is dropped, and accepting never stops. Once
  its first message opens, a connection is a key holder's (replays are refused
  by the handshake, `handshake.FirstMessages`) and is no longer counted nor
  dropped: a real WSL2 half that opens a hundred links at once loses none;
- refusals are counted per peer: the first of each reason in an interval is
  logged (up to `LINES_PER_PEER`), the rest once at the interval's end, with
  their count; and a peer
  with more than `FREE_FAILURES` failed handshakes in the interval has its
  next ones held back `SLOW_DOWN` seconds first (within their deadline and
  their share of the limit), which bounds the key guesses and the CPU any
  flood of them gets.
"""

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

__all__ = [
    "FREE_FAILURES",
    "HANDSHAKE_DEADLINE",
    "PENDING_LIMIT",
    "REPORT_INTERVAL",
    "SLOW_DOWN",
    "Pending",
    "PendingHandshakes",
    "RefusalLog",
]

log = logging.getLogger(__name__)

HANDSHAKE_DEADLINE = 1.0
# Four times what one WSL2 half has under way at most (`admission.OPENING_AT_ONCE`): a burst
# of its links meets no drop before their first messages are read.
PENDING_LIMIT = 256
REPORT_INTERVAL = 10.0
FREE_FAILURES = 20
SLOW_DOWN = 0.5
# Lines logged at once per peer and interval (one per new reason); the rest are counted.
LINES_PER_PEER = 4
# Peers counted at once; past this, refusals from new peers are counted together (a flood
# from many addresses, in mirrored mode from all of 127.0.0.0/8, must not grow the table).
MAX_PEERS_COUNTED = 1024
OTHER_PEERS = "other addresses"


@dataclass(eq=False)
class Pending:
    """One connection's handshake under way."""

    peer: str
    scope: trio.CancelScope
    handshakes: "PendingHandshakes"
    dropped: bool = False

    def first_message_opened(self) -> None:
        """Its peer holds the key: no longer one of the unproven, never dropped."""
        self.handshakes.forget_unproven(self)


class PendingHandshakes:
    """The connections whose handshake is under way; at most `limit` of them unproven."""

    def __init__(self, limit: int = PENDING_LIMIT, deadline: float = HANDSHAKE_DEADLINE) -> None:
        self._limit = limit
        self.deadline = deadline
        self._unproven: dict[str, OrderedDict[Pending, None]] = {}  # per peer, oldest first
        self.unproven = 0
        self._all: set[Pending] = set()

    def add(self, peer: str) -> Pending:
        """A new pending handshake from `peer`, its scope under the deadline; drops an
        older unproven one when the limit is reached."""
        if self.unproven >= self._limit:
            self._drop_one()
        scope = trio.CancelScope(deadline=trio.current_time() + self.deadline)
        pending = Pending(peer, scope, self)
        self._unproven.setdefault(peer, OrderedDict())[pending] = None
        self.unproven += 1
        self._all.add(pending)
        return pending

    def forget_unproven(self, pending: Pending) -> None:
        entries = self._unproven.get(pending.peer)
        if entries is None or pending not in entries:
            return
        del entries[pending]
        if not entries:
            del self._unproven[pending.peer]
        self.unproven -= 1

    def remove(self, pending: Pending) -> None:
        self.forget_unproven(pending)
        self._all.discard(pending)

    def cancel_all(self) -> None:
        """Shutdown: end every handshake under way."""
        for pending in self._all:
            pending.scope.cancel()

    def _drop_one(self) -> None:
        entries = max(self._unproven.values(), key=len)
        victim = next(iter(entries))
        victim.dropped = True
        victim.scope.cancel()
        self.remove(victim)


@dataclass
class _PeerRefusals:
    """One peer's refusals in the current interval."""

    logged: set[str] = field(default_factory=set)  # reasons logged this interval
    more: int = 0  # refusals not logged one by one
    failures: int = 0  # failed handshakes (not timeouts or drops), for the slow-down
    last_reason: str = ""


@dataclass
class RefusalLog:
    """Refused connections per peer: logged without flooding the log, and counted for the
    slow-down."""

    interval: float = REPORT_INTERVAL
    free_failures: int = FREE_FAILURES
    slow_down: float = SLOW_DOWN
    clock: Callable[[], float] = trio.current_time
    _peers: dict[str, _PeerRefusals] = field(default_factory=dict)
    _started: float | None = None

    def refused(self, peer: str, reason: str, *, failed_handshake: bool) -> None:
        """Note a refusal of `peer`'s connection; a reason new in this interval is logged at
        once."""
        self._roll_over()
        if peer not in self._peers and len(self._peers) >= MAX_PEERS_COUNTED:
            peer = OTHER_PEERS
        refusals = self._peers.setdefault(peer, _PeerRefusals())
        refusals.failures += failed_handshake
        refusals.last_reason = reason
        if reason in refusals.logged or len(refusals.logged) >= LINES_PER_PEER:
            refusals.more += 1
        else:
            refusals.logged.add(reason)
            log.warning("refused a connection from %s: %s", peer, reason)

    def delay(self, peer: str) -> float:
        """How long to hold back a new handshake from `peer` before taking it on."""
        self._roll_over()
        refusals = self._peers.get(peer)
        if refusals is None or refusals.failures <= self.free_failures:
            return 0.0
        return self.slow_down

    def report(self) -> None:
        """Log the counts of the interval that is over, and start a new one."""
        for peer, refusals in self._peers.items():
            if refusals.more:
                log.warning(
                    "refused %d more connection(s) from %s in the last %gs (the last: %s)",
                    refusals.more,
                    peer,
                    self.interval,
                    refusals.last_reason,
                )
        self._peers.clear()
        self._started = self.clock()

    def _roll_over(self) -> None:
        now = self.clock()
        if self._started is None:
            self._started = now
        elif now - self._started >= self.interval:
            self.report()

    async def report_every_interval(self) -> None:
        """Report at the end of each interval, so the last counts of a flood are not left
        unsaid until the next refusal; the counts so far when cancelled."""
        try:
            while True:
                await trio.sleep(self.interval)
                self.report()
        finally:
            self.report()
