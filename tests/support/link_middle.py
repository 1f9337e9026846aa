"""A party in the middle of the link, and a hand-made WSL2 half, for the attack tests.

`Middle` listens where the WSL2 half dials and passes each link on to the real
Windows half, byte for byte, recording both directions; an `Attack` may change
what it passes on. It knows the sealed link's shape (`link/handshake.py`,
`link/sealed.py`), so attacks can be aimed at whole frames: the WSL2 half's
first message and confirmation, the Windows half's message 2, then frames of a
4-byte header and a sealed body.
"""

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from tailscale_wsl2.link.handshake import LINK_PREFIX, MESSAGE_1_SIZE, MESSAGE_2_SIZE, open_link
from tailscale_wsl2.link.noise import TAG_SIZE
from tailscale_wsl2.link.sealed import SealedLink, SealedSession, new_scratch_buffers
from tailscale_wsl2.link.sessions import GONE, HEADER
from tailscale_wsl2.net.sockets import connect_socket
from tests.support.localapi_standin import Reader

TO_WINDOWS = "to-windows"
TO_WSL = "to-wsl"
# The handshake's units in each direction, before the frames.
HANDSHAKE_UNITS = {
    TO_WINDOWS: [len(LINK_PREFIX) + MESSAGE_1_SIZE, TAG_SIZE],
    TO_WSL: [MESSAGE_2_SIZE],
}
# The same for the first, cleartext version of the link (so that the attack tests can be run
# against it and show what it let through): the WSL2 half's answer and the session-mode byte;
# the Windows half's challenge and its "accepted". Its frames carry no tag.
V1_HANDSHAKE_UNITS = {TO_WINDOWS: [33, 1], TO_WSL: [38, 1]}
V1_HELLO = b"TSWSL\x01"


class Attack:
    """What the middle does to each unit it passes on; by default, nothing."""

    def unit(self, link: int, direction: str, frame: int | None, data: bytes) -> bytes:
        """The bytes to pass on for a unit of `direction` on link number `link`: a handshake
        message (`frame` None) or frame number `frame` (0, 1, ...); b"" drops it."""
        return data


@dataclass
class Middle:
    windows_port: int
    attack: Attack = field(default_factory=Attack)
    port: int = 0
    # Per link: every byte that came from each side, before any change.
    seen: list[dict[str, bytearray]] = field(default_factory=list)
    links: int = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listener.socket.getsockname()[1]
        async with listener, trio.open_nursery() as nursery:
            task_status.started()
            while True:
                nursery.start_soon(self._pass_on, await listener.accept())

    async def _pass_on(self, wsl: trio.SocketStream) -> None:
        link = self.links
        self.links += 1
        seen = {TO_WINDOWS: bytearray(), TO_WSL: bytearray()}
        self.seen.append(seen)
        try:
            windows = await trio.open_tcp_stream("127.0.0.1", self.windows_port)
        except OSError:
            await wsl.aclose()
            return
        async with wsl, windows, trio.open_nursery() as nursery:
            nursery.start_soon(self._direction, link, TO_WINDOWS, wsl, windows, seen, nursery)
            nursery.start_soon(self._direction, link, TO_WSL, windows, wsl, seen, nursery)

    async def _direction(
        self,
        link: int,
        direction: str,
        src: trio.SocketStream,
        dst: trio.SocketStream,
        seen: dict[str, bytearray],
        nursery: trio.Nursery,
    ) -> None:
        pending = bytearray()
        index = 0
        try:
            while chunk := await src.receive_some(65536):
                seen[direction] += chunk
                pending += chunk
                first = bytes(seen[direction][: len(LINK_PREFIX)])
                handshake = len(handshake_units(direction, first))
                while (size := unit_size(direction, index, pending, first)) and len(
                    pending
                ) >= size:
                    unit, pending = bytes(pending[:size]), pending[size:]
                    frame = index - handshake if index >= handshake else None
                    await dst.send_all(self.attack.unit(link, direction, frame, unit))
                    index += 1
            await dst.send_all(bytes(pending))
            await dst.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            nursery.cancel_scope.cancel()


def is_sealed(direction: str, first: bytes) -> bool:
    """Whether a direction whose first bytes were `first` is of the sealed link."""
    return first == LINK_PREFIX if direction == TO_WINDOWS else first != V1_HELLO


def handshake_units(direction: str, first: bytes) -> list[int]:
    return (HANDSHAKE_UNITS if is_sealed(direction, first) else V1_HANDSHAKE_UNITS)[direction]


def unit_size(direction: str, index: int, pending: bytes | bytearray, first: bytes) -> int | None:
    """The size of unit `index` of `direction` (whose first bytes were `first`), or None
    until its header has come."""
    sealed = is_sealed(direction, first)
    handshake = handshake_units(direction, first)
    if index < len(handshake):
        return handshake[index]
    if len(pending) < HEADER.size:
        return None
    (length,) = HEADER.unpack_from(pending)
    if length > 1 << 20 and length != GONE:  # not a link: pass it on as it comes
        return len(pending)
    return HEADER.size + (0 if length in (0, GONE) else length) + (TAG_SIZE if sealed else 0)


@asynccontextmanager
async def running_middle(windows_port: int, attack: Attack) -> AsyncIterator[Middle]:
    middle = Middle(windows_port, attack)
    async with trio.open_nursery() as nursery:
        await nursery.start(middle.serve)
        yield middle
        nursery.cancel_scope.cancel()


async def sealed_link(port: int, key: bytes) -> SealedLink:
    """A link to the Windows half at 127.0.0.1:`port`, made as the WSL2 half makes one."""
    stream = await connect_socket(socket.AF_INET, ("127.0.0.1", port), timeout=10)
    return await open_link(stream, key, new_scratch_buffers())


async def sealed_status(port: int, key: bytes) -> int:
    """`GET /localapi/v0/status` on a link made by hand: the status of the answer."""
    link = await sealed_link(port, key)
    async with SealedSession(link) as session:
        await session.send_all(
            b"GET /localapi/v0/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        head = await Reader(session).until(b"\r\n\r\n")
        assert head is not None, "the link closed before an answer"
        return int(head.split()[1])
