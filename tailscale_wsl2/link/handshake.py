"""The link handshake: only a holder of the link key may use the Windows half.

The Windows half exposes Tailscale's LocalAPI (log out, change settings, send
files, turn on SSH) on a TCP port that every WSL distro and every other VM on
the WSL switch can reach. The daemon itself never serves a client it has not
identified, so the link between the halves must not either. Before a single
byte reaches the LocalAPI, each connection proves knowledge of a shared secret:

    Windows half -> WSL2 half   HELLO  = b"TSWSL" + version + 32-byte nonce
    WSL2 half    -> Windows half ANSWER = version + HMAC-SHA256(key, HELLO)
    Windows half -> WSL2 half   ACCEPTED (one byte), or the connection closes

The nonce is fresh per connection, so a recorded answer is worthless for the
next one; the comparison is constant-time. The WSL2 half waits for the verdict
before relaying the client's first byte, so that when the Windows half says no
it can still answer the `tailscale` CLI with a 502 naming the cause (one extra
half round trip on a link that is local to the machine). Anything else (an
answer that is late, short, too long, of another version or simply wrong)
closes the connection and the upstream is never opened for it.
"""

import hashlib
import hmac
import os
from collections.abc import Callable

import trio

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "HandshakeFailed",
    "NoHandshake",
    "WrongKey",
    "answer_for",
    "challenge_client",
    "prove_key",
]

MAGIC = b"TSWSL"
VERSION = b"\x01"
NONCE_BYTES = 32
HELLO_SIZE = len(MAGIC) + len(VERSION) + NONCE_BYTES
ANSWER_SIZE = len(VERSION) + hashlib.sha256().digest_size
ACCEPTED = b"\x06"  # ASCII ACK
HANDSHAKE_TIMEOUT = 5.0


class HandshakeFailed(Exception):
    """The handshake did not complete; the message says why, for the user."""


class WrongKey(HandshakeFailed):
    """The Windows half refused the answer: the two halves hold different keys."""


class NoHandshake(HandshakeFailed):
    """The peer gave no hello: `received` is what it sent instead (b"": it closed the
    connection first; None: nothing within `waited` seconds). `link.mismatch` tells who
    it is from that."""

    def __init__(self, received: bytes | None, waited: float) -> None:
        said = "nothing" if received is None else repr(received[:40]) if received else "no byte"
        super().__init__(f"it sent no tailscale-wsl2 handshake ({said})")
        self.received = received
        self.waited = waited


def answer_for(key: bytes, hello: bytes) -> bytes:
    return VERSION + hmac.digest(key, hello, hashlib.sha256)


def _no_description(first_bytes: bytes) -> str | None:
    return None


async def _receive_answer(
    stream: trio.abc.Stream, describe_first_bytes: Callable[[bytes], str | None]
) -> bytes | str:
    """Exactly ANSWER_SIZE bytes, or why not: the peer sent fewer or more, or its first
    bytes say it is no WSL2 half answering (`describe_first_bytes`).

    Asking for one byte more than still expected detects a peer that sends
    more than the protocol allows at this point, without ever consuming bytes
    that belong to the relayed connection from a peer that behaves.
    """
    received = bytearray()
    while len(received) < ANSWER_SIZE:
        chunk = await stream.receive_some(ANSWER_SIZE - len(received) + 1)
        if not chunk:
            return "malformed answer"
        if not received and (reason := describe_first_bytes(bytes(chunk))):
            return reason
        received += chunk
    return bytes(received) if len(received) == ANSWER_SIZE else "malformed answer"


async def challenge_client(
    stream: trio.abc.Stream,
    key: bytes,
    *,
    timeout: float = HANDSHAKE_TIMEOUT,
    describe_first_bytes: Callable[[bytes], str | None] = _no_description,
) -> str | None:
    """Windows half: challenge a new connection; None if it proved the key, else why not."""
    hello = MAGIC + VERSION + os.urandom(NONCE_BYTES)
    with trio.move_on_after(timeout):
        await stream.send_all(hello)
        answer = await _receive_answer(stream, describe_first_bytes)
        if isinstance(answer, str):
            return answer
        if not hmac.compare_digest(answer, answer_for(key, hello)):
            return "wrong key" if answer[:1] == VERSION else "unknown handshake version"
        await stream.send_all(ACCEPTED)
        return None
    return f"no answer within {timeout:g}s"


def _could_be_hello(received: bytes | bytearray) -> bool:
    return bytes(received[: len(MAGIC)]) == MAGIC[: len(received)]


async def _receive_hello(stream: trio.abc.Stream, deadline: float, timeout: float) -> bytes:
    """The Windows half's hello; NoHandshake as soon as its bytes cannot be one, or at the
    deadline with what came (None for nothing)."""
    received = bytearray()
    with trio.move_on_at(deadline):
        while len(received) < HELLO_SIZE:
            chunk = await stream.receive_some(HELLO_SIZE - len(received) + 1)
            if not chunk:
                raise NoHandshake(bytes(received), timeout)
            received += chunk
            if not _could_be_hello(received):
                raise NoHandshake(bytes(received), timeout)
        if len(received) > HELLO_SIZE:
            raise HandshakeFailed("it sent a malformed handshake: update both halves")
        return bytes(received)
    if received:
        raise HandshakeFailed(f"it sent part of a handshake, then nothing for {timeout:g}s")
    raise NoHandshake(None, timeout)


async def prove_key(
    stream: trio.abc.Stream, key: bytes, *, timeout: float = HANDSHAKE_TIMEOUT
) -> None:
    """WSL2 half: answer the Windows half's challenge; raise HandshakeFailed (NoHandshake for
    a peer that is no Windows half expecting it, WrongKey for a refused key)."""
    deadline = trio.current_time() + timeout
    hello = await _receive_hello(stream, deadline, timeout)
    if hello[len(MAGIC) : len(MAGIC) + 1] != VERSION:
        raise HandshakeFailed("it speaks another handshake version: update both halves")
    with trio.move_on_at(deadline):
        await stream.send_all(answer_for(key, hello))
        if await stream.receive_some(1) != ACCEPTED:
            raise WrongKey("it refused the link key: the two halves use different keys")
        return
    raise HandshakeFailed(f"it did not answer the link key within {timeout:g}s")
