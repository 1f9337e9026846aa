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
peer that speaks something else is named rather than taken for a wrong key: an
older Windows half (it speaks first, with `TSWSL\\x01`), a Windows half run
with `--insecure-no-auth` (it answers `NO_AUTH_HERE`, `sessions.py`), an HTTP
server, silence, or a half with another key (the Windows half answers
`KEY_REFUSED`, which tells nothing a closed connection would not).
"""

import re
from collections import OrderedDict
from collections.abc import Callable

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
from tailscale_wsl2.net.sockets import PEER_GONE, RawSocketStream

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "KEY_REFUSED",
    "LINK_PREFIX",
    "LINK_PROLOGUE",
    "MESSAGE_1_SIZE",
    "MESSAGE_2_SIZE",
    "FirstMessages",
    "HandshakeFailed",
    "accept_link",
    "open_link",
]

MAGIC = b"TSWSL"
LINK_PREFIX = SEALED_LINK_PREFIX
LINK_PROLOGUE = PROLOGUE + LINK_PREFIX
OLD_HELLO = MAGIC + b"\x01"  # the first version's challenge, sent by its Windows half
KEY_REFUSED = LINK_PREFIX + b"\x15"  # the Windows half's answer to a message 1 that did not open
MESSAGE_1_SIZE = 32 + TAG_SIZE  # an ephemeral public key and an empty payload's tag
MESSAGE_2_SIZE = 32 + TAG_SIZE
CONFIRMATION_AD = LINK_PREFIX
# How long the WSL2 half waits for message 2. The Windows half gives a handshake
# about a second (relay/pending.py), so this only bounds a peer that is not one.
HANDSHAKE_TIMEOUT = 5.0

_HTTP = re.compile(rb"HTTP/\d")

# The Windows half's refusals, as its log names them.
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
            return check(received, not chunk) or "it closed the connection during the handshake"
    return received


# What a Windows half says instead of message 2, word for word.
_REFUSALS = {
    KEY_REFUSED: "it refused the link key: the two halves use different keys",
    NO_AUTH_HERE: (
        "it runs with --insecure-no-auth: run both halves with the link key, "
        "or both with that option"
    ),
}


def _windows_half_answer(received: bytes, closed: bool) -> str | None:
    """Why what the Windows half sent cannot be message 2, if it cannot."""
    if received.startswith(OLD_HELLO):
        return "it is an older tailscale-wsl2 (link version 1): run the same version on both sides"
    if refusal := _REFUSALS.get(received):
        return refusal
    if _HTTP.match(received):
        return (
            "an HTTP server answered, not a Windows half that proves the link key "
            "(another program on that port?)"
        )
    if not closed:
        return None
    if not received:
        return (
            "it closed the connection without answering the handshake "
            "(is this address outside the subnet it serves, or is it flooded?)"
        )
    return "it answered something that is not the link handshake"


def _wsl_half_start(received: bytes, closed: bool) -> str | None:
    """Why the first bytes of a connection to the Windows half are not a link handshake."""
    if LINK_PREFIX.startswith(received[: len(LINK_PREFIX)]):
        return "it closed the connection during the handshake" if closed else None
    if received.startswith(b"\x00"):
        return "it sent no link handshake (a WSL2 half run with --insecure-no-auth?)"
    if received.startswith(MAGIC):
        return f"it speaks link version {received[len(MAGIC)]}: run one version on both sides"
    return "it sent something that is not a tailscale-wsl2 link handshake"


def _closed_or_done(received: bytes, closed: bool) -> str | None:
    return "it closed the connection during the handshake" if closed else None


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
    with trio.move_on_after(timeout):
        await stream.send_all(LINK_PREFIX + handshake.write_message_1())
        answer = await _receive(stream, MESSAGE_2_SIZE, _windows_half_answer)
        if isinstance(answer, str):
            raise HandshakeFailed(answer)
        try:
            handshake.read_message_2(answer)
        except NoiseFailed:
            raise HandshakeFailed(
                "it could not prove that it holds the link key: something other than your "
                "Windows half answers at that address, or the connection was tampered with"
            ) from None
        ciphers = handshake.split()
        await stream.send_all(ciphers.send.seal(b"", CONFIRMATION_AD))
        return SealedLink(stream, ciphers, scratch)
    raise HandshakeFailed(
        f"it did not answer the link handshake within {timeout:g}s "
        "(another program holding the port?)"
    )


async def accept_link(
    stream: RawSocketStream,
    key: bytes,
    scratch: SpareBuffers,
    first_message_opened: Callable[[], None],
    seen: FirstMessages | None = None,
) -> SealedLink | str:
    """Windows half: the handshake on a new connection; the sealed link, or why not.

    `first_message_opened` is called once a message 1 opens that `seen` has not seen
    before: its sender holds the key. The caller bounds the time it takes.
    """
    try:
        handshake = await _take_first_message(stream, key, seen)
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
    stream: RawSocketStream, key: bytes, seen: FirstMessages | None
) -> Responder | str:
    """The handshake after a message 1 that opens and is new, or why there is none."""
    first = await _receive(stream, len(LINK_PREFIX) + MESSAGE_1_SIZE, _wsl_half_start)
    if isinstance(first, str):
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
