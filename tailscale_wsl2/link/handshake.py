"""The link handshake: each half proves the link key to the other, and the link is sealed.

The Windows half exposes Tailscale's LocalAPI (log out, change settings, send
files, turn on SSH) on a TCP port that every WSL distro and every other VM on
the WSL switch can reach; the WSL2 half sends it the `tailscale` CLI's
requests, auth keys among them. So neither half may trust the other before it
has proven the key, and nothing may travel in the clear. The handshake is
Noise NNpsk0 with the link key as the pre-shared key (`noise.py`), in three
messages:

    WSL2 half    -> Windows half  LINK_PREFIX + message 1      (6 + 48 bytes)
    Windows half -> WSL2 half     message 2                    (48 bytes)
    WSL2 half    -> Windows half  confirmation: the first sealed frame, empty (16 bytes)

- Message 2 proves to the WSL2 half that the Windows half holds the key and is
  answering this very link (its keys depend on the WSL2 half's fresh ephemeral
  key). Only then does a client byte leave the WSL2 half.
- Message 1 can be a replay, so the Windows half trusts its peer only once the
  confirmation opens: its key depends on the Windows half's fresh ephemeral
  key too. Only then is the link admitted and may the LocalAPI be opened.
  A replay would still cost the Windows half a key exchange and a place among
  the handshakes under way, so the first messages of the last while are
  remembered (`FirstMessages`) and one seen before is refused at once.
- Each side's messages are bound to its role by the pattern, so a message
  reflected back to its sender fails, and a party that relays the handshake
  between the two real halves gets transport keys it does not know: every
  frame after it is sealed under them (`sealed.py`).

`LINK_PREFIX` is sent in the clear and is part of the Noise prologue, so a
peer that speaks something else is named rather than taken for a wrong key.
The WSL2 half raises a `HandshakeFailed` of its own kind for each: a half with
another key (the Windows half answers `KEY_REFUSED`, which tells nothing a
closed connection would not: `WrongKey`), a Windows half run with
`--insecure-no-auth` (it answers `NO_AUTH_HERE`, `sessions.py`:
`InsecurePeer`), an older Windows half (it speaks first, with `TSWSL\\x01`:
`OtherVersion`), and anything else, an HTTP server, a banner, a close or
silence (`NoHandshake`, with what came, for `mismatch.py` to name). Message 2
has no clear marker, so bytes are taken for another program's before all of it
has come only when they cannot be its start in practice: a known answer, an
HTTP status line, or a greeting line of text (the start of a key is one with a
chance below 2**-23, and only where the network split message 2); all 48 bytes
of it in text are no key either.
The Windows half, in turn, answers a connection that starts with anything but a
link handshake with `KEY_EXPECTED` (a WSL2 half run with `--insecure-no-auth`,
doctor, curl), so that it is named too, and lets its caller describe what came
(`describe_first_bytes`).
"""

import re
import socket
from collections import OrderedDict
from collections.abc import Callable
from contextlib import suppress

import trio

from tailscale_wsl2.link.noise import (
    PROLOGUE,
    TAG_SIZE,
    Initiator,
    NoiseFailed,
    Responder,
)
from tailscale_wsl2.link.sealed import SealedLink
from tailscale_wsl2.link.sessions import NO_AUTH_HERE, SEALED_LINK_PREFIX
from tailscale_wsl2.net.pump import SpareBuffers
from tailscale_wsl2.net.sockets import PEER_GONE, RawSocketStream, send_now

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "KEY_EXPECTED",
    "KEY_REFUSED",
    "LINK_PREFIX",
    "LINK_PROLOGUE",
    "LINK_VERSION",
    "MAGIC",
    "MESSAGE_1_SIZE",
    "MESSAGE_2_SIZE",
    "FirstMessages",
    "HandshakeFailed",
    "InsecurePeer",
    "NoHandshake",
    "OtherVersion",
    "WrongKey",
    "accept_link",
    "open_link",
]

MAGIC = b"TSWSL"
LINK_PREFIX = SEALED_LINK_PREFIX
LINK_PROLOGUE = PROLOGUE + LINK_PREFIX
LINK_VERSION = LINK_PREFIX[len(MAGIC)]
KEY_REFUSED = LINK_PREFIX + b"\x15"  # the Windows half's answer to a message 1 that did not open
# The Windows half's answer to a connection that starts with no link handshake.
KEY_EXPECTED = LINK_PREFIX + b"\x01"
MESSAGE_1_SIZE = 32 + TAG_SIZE  # an ephemeral public key and an empty payload's tag
MESSAGE_2_SIZE = 32 + TAG_SIZE
CONFIRMATION_AD = LINK_PREFIX
# How long the WSL2 half waits for message 2. The Windows half gives a handshake
# about a second (relay/pending.py), so this only bounds a peer that is not one.
HANDSHAKE_TIMEOUT = 5.0

_HTTP = re.compile(rb"HTTP/\d")

# The Windows half's refusals, as its log names them.
CLOSED_DURING_HANDSHAKE = "it closed the connection during the handshake"
REFUSED_KEY = "wrong link key (or a WSL2 half of another version)"
NOT_CONFIRMED = "the handshake was not confirmed (a replayed first message?)"
REPLAYED = "a first message seen before: a replayed handshake"
# First messages remembered: a WSL2 half opens a few links a second at most, so this
# covers far more than the time a recorded handshake stays interesting.
REMEMBERED_FIRST_MESSAGES = 4096


class FirstMessages:
    """The ephemeral keys of recent first messages that opened, to refuse replays."""

    def __init__(self, size: int = REMEMBERED_FIRST_MESSAGES) -> None:
        self._size = size
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def seen_before(self, message: bytes) -> bool:
        """Whether `message`'s ephemeral key came before; remembers it either way."""
        ephemeral = message[:32]
        if ephemeral in self._seen:
            return True
        self._seen[ephemeral] = None
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return False


class HandshakeFailed(Exception):
    """The WSL2 half's handshake did not complete; the message says why, for the user."""


class WrongKey(HandshakeFailed):
    """The Windows half refused message 1: the two halves hold different keys."""


class InsecurePeer(HandshakeFailed):
    """The Windows half runs with --insecure-no-auth (it answered `NO_AUTH_HERE`)."""


class OtherVersion(HandshakeFailed):
    """The peer is a tailscale-wsl2 of another link version (`version`)."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.older = version < LINK_VERSION
        super().__init__(
            f"it is {'an older' if self.older else 'a newer'} tailscale-wsl2 (link version "
            f"{version}, this half speaks {LINK_VERSION}): run the same version on both sides"
        )


class NoHandshake(HandshakeFailed):
    """The peer gave no answer to the handshake: `received` is what it sent instead (b"": it
    closed the connection first; None: nothing within `waited` seconds). `link.mismatch`
    tells who it is from that."""

    def __init__(self, received: bytes | None, waited: float) -> None:
        said = "nothing" if received is None else repr(received[:40]) if received else "no byte"
        super().__init__(f"it sent no tailscale-wsl2 handshake ({said})")
        self.received = received
        self.waited = waited


# --- reading ----------------------------------------------------------------------------------

# Looks at the bytes received so far (and whether the peer has closed): a reason to stop, or
# None to read on.
Check = Callable[[bytes, bool], str | None]


async def _receive(stream: RawSocketStream, size: int, check: Check) -> bytes | str:
    """Exactly `size` bytes (never more: what follows belongs to the next step), or the
    reason `check` gives to stop early."""
    received = b""
    while len(received) < size:
        chunk = await stream.receive_some(size - len(received))
        received += chunk
        if not chunk or check(received, False):
            return check(received, not chunk) or CLOSED_DURING_HANDSHAKE
    return received


# What a Windows half says instead of message 2, word for word.
_REFUSALS: dict[bytes, Callable[[], HandshakeFailed]] = {
    KEY_REFUSED: lambda: WrongKey("it refused the link key: the two halves use different keys"),
    NO_AUTH_HERE: lambda: InsecurePeer(
        "it runs with --insecure-no-auth: run both halves with the link key, "
        "or both with that option"
    ),
}
# Enough of another program's answer to quote its status line and its Server header.
SAMPLE_BYTES = 1024
_TEXT = frozenset(range(0x20, 0x7F)) | frozenset(b"\t\r\n")


# The shortest greeting taken for one before message 2 could have come whole.
MIN_GREETING_BYTES = 12


def _is_text_line(received: bytes) -> bool:
    """A banner (SSH, SMTP): printable text ending a line, sent by a program that then waits."""
    return (
        len(received) >= MIN_GREETING_BYTES
        and received.endswith(b"\n")
        and _TEXT.issuperset(received)
    )


def _not_message_2(received: bytes) -> HandshakeFailed | None:
    """Why `received`, the start of what the Windows half sent, is no message 2, if it is
    surely none already."""
    if refusal := _REFUSALS.get(received):
        return refusal()
    if received.startswith(MAGIC) and len(received) > len(MAGIC):
        version = received[len(MAGIC)]
        if version != LINK_VERSION:  # an older half speaks first: its hello
            return OtherVersion(version)
        return None  # a refusal still arriving, or one this version does not know
    if _HTTP.match(received) or _is_text_line(received):
        return NoHandshake(received, 0)
    return None


async def _receive_message_2(stream: RawSocketStream, deadline: float, timeout: float) -> bytes:
    """Message 2, exactly (what follows belongs to the link), by `deadline`; raise the
    HandshakeFailed that names what came instead."""
    received = bytearray()
    closed = False
    with trio.move_on_at(deadline):
        while len(received) < MESSAGE_2_SIZE:
            chunk = await stream.receive_some(MESSAGE_2_SIZE - len(received))
            received += chunk
            closed = not chunk
            failed = _not_message_2(bytes(received))
            if failed is not None and not isinstance(failed, NoHandshake):
                raise failed
            if failed is not None or closed:
                if not closed and _HTTP.match(received):
                    await _read_http_head(stream, received)
                break
        else:
            if not _TEXT.issuperset(received):
                return bytes(received)
            # Text is no key and tag (a chance below 2**-60): another program's
            # words, such as the body of an HTTP/0.9 error page.
    raise NoHandshake(bytes(received) if received or closed else None, timeout)


async def _read_http_head(stream: RawSocketStream, received: bytearray) -> None:
    """The rest of another program's HTTP head into `received`, as far as it comes, so that
    its description can quote its headers."""
    with suppress(*PEER_GONE):
        while b"\r\n\r\n" not in received and len(received) < SAMPLE_BYTES:
            chunk = await stream.receive_some(SAMPLE_BYTES - len(received))
            if not chunk:
                return
            received += chunk


# Bytes read and dropped, at most, before answering KEY_EXPECTED: a request already here is
# read, so that closing the connection does not reset it and destroy the answer in flight.
DRAIN_BYTES = 65536


def _no_description(received: bytes) -> str | None:
    return None


def _wsl_half_start(describe: Callable[[bytes], str | None]) -> Check:
    """The check on the first bytes of a connection to the Windows half: why they are no
    link handshake (`describe` names what they are, where it can)."""

    def check(received: bytes, closed: bool) -> str | None:
        if LINK_PREFIX.startswith(received[: len(LINK_PREFIX)]):
            return CLOSED_DURING_HANDSHAKE if closed else None
        if description := describe(received):
            return description
        if received.startswith(b"\x00"):
            return "it sent no link handshake (a WSL2 half run with --insecure-no-auth?)"
        if received.startswith(MAGIC):
            return f"it speaks link version {received[len(MAGIC)]}: run one version on both sides"
        return "it sent something that is not a tailscale-wsl2 link handshake"

    return check


def _answer_key_expected(sock: socket.socket) -> None:
    """Tell a peer that started no handshake that this half expects one, without waiting."""
    try:
        for _ in range(DRAIN_BYTES // 4096):
            if not sock.recv(4096):  # a non-blocking socket: BlockingIOError once it is empty
                break
    except OSError:  # BlockingIOError among them
        pass
    try:
        send_now(sock, KEY_EXPECTED)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # it left first


def _closed_or_done(received: bytes, closed: bool) -> str | None:
    return CLOSED_DURING_HANDSHAKE if closed else None


# --- the two roles ----------------------------------------------------------------------------


async def open_link(
    stream: RawSocketStream,
    key: bytes,
    scratch: SpareBuffers,
    *,
    timeout: float = HANDSHAKE_TIMEOUT,
) -> SealedLink:
    """WSL2 half: the handshake on a new connection to the Windows half; raise
    HandshakeFailed (or one of PEER_GONE) with the reason."""
    handshake = Initiator(key, prologue=LINK_PROLOGUE)
    deadline = trio.current_time() + timeout
    with trio.move_on_at(deadline):
        await stream.send_all(LINK_PREFIX + handshake.write_message_1())
    # Not inside that scope: of two cancelled scopes the outer one would take the
    # cancellation, and what `_receive_message_2` gathered to name the peer with.
    answer = await _receive_message_2(stream, deadline, timeout)
    try:
        handshake.read_message_2(answer)
    except NoiseFailed:
        raise HandshakeFailed(
            "it could not prove that it holds the link key: something other than your "
            "Windows half answers at that address, or the connection was tampered with"
        ) from None
    ciphers = handshake.split()
    with trio.move_on_at(deadline):
        await stream.send_all(ciphers.send.seal(b"", CONFIRMATION_AD))
        return SealedLink(stream, ciphers, scratch)
    raise HandshakeFailed(f"it took no bytes of the handshake within {timeout:g}s")


async def accept_link(
    stream: RawSocketStream,
    key: bytes,
    scratch: SpareBuffers,
    first_message_opened: Callable[[], None],
    seen: FirstMessages | None = None,
    describe_first_bytes: Callable[[bytes], str | None] = _no_description,
) -> SealedLink | str:
    """Windows half: the handshake on a new connection; the sealed link, or why not.

    `first_message_opened` is called once a message 1 opens that `seen` has not seen
    before: its sender holds the key. `describe_first_bytes` names a peer that starts
    with something else, where it can (`mismatch.describe_client_words`). The caller
    bounds the time it takes.
    """
    try:
        handshake = await _take_first_message(stream, key, seen, describe_first_bytes)
        if isinstance(handshake, str):
            return handshake
        first_message_opened()
        await stream.send_all(handshake.write_message_2())
        ciphers = handshake.split()
        confirmation = await _receive(stream, TAG_SIZE, _closed_or_done)
        if isinstance(confirmation, str):
            return f"{confirmation}, before confirming it (a replayed first message?)"
        ciphers.receive.open(confirmation, CONFIRMATION_AD)
    except NoiseFailed:
        return NOT_CONFIRMED
    except PEER_GONE as exc:
        return f"the connection broke during the handshake ({exc})"
    return SealedLink(stream, ciphers, scratch)


async def _take_first_message(
    stream: RawSocketStream,
    key: bytes,
    seen: FirstMessages | None,
    describe: Callable[[bytes], str | None],
) -> Responder | str:
    """The handshake after a message 1 that opens and is new, or why there is none."""
    size = len(LINK_PREFIX) + MESSAGE_1_SIZE
    first = await _receive(stream, size, _wsl_half_start(describe))
    if isinstance(first, str):
        if first != CLOSED_DURING_HANDSHAKE:
            _answer_key_expected(stream.socket)
        return first
    message = first[len(LINK_PREFIX) :]
    handshake = Responder(key, prologue=LINK_PROLOGUE)
    try:
        handshake.read_message_1(message)
    except NoiseFailed:
        await stream.send_all(KEY_REFUSED)
        return REFUSED_KEY
    if seen is not None and seen.seen_before(message):
        return REPLAYED
    return handshake
