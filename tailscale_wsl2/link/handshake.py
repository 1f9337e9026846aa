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

import trio

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "HandshakeFailed",
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


def answer_for(key: bytes, hello: bytes) -> bytes:
    return VERSION + hmac.digest(key, hello, hashlib.sha256)


async def _receive_exactly(stream: trio.abc.Stream, size: int) -> bytes | None:
    """Exactly `size` bytes, or None when the peer sends fewer or more.

    Asking for one byte more than still expected detects a peer that sends
    more than the protocol allows at this point, without ever consuming bytes
    that belong to the relayed connection from a peer that behaves.
    """
    received = bytearray()
    while len(received) < size:
        chunk = await stream.receive_some(size - len(received) + 1)
        if not chunk:
            return None
        received += chunk
    return bytes(received) if len(received) == size else None


async def challenge_client(
    stream: trio.abc.Stream, key: bytes, *, timeout: float = HANDSHAKE_TIMEOUT
) -> str | None:
    """Windows half: challenge a new connection; None if it proved the key, else why not."""
    hello = MAGIC + VERSION + os.urandom(NONCE_BYTES)
    with trio.move_on_after(timeout):
        await stream.send_all(hello)
        answer = await _receive_exactly(stream, ANSWER_SIZE)
        if answer is None:
            return "malformed answer"
        if not hmac.compare_digest(answer, answer_for(key, hello)):
            return "wrong key" if answer[:1] == VERSION else "unknown handshake version"
        await stream.send_all(ACCEPTED)
        return None
    return f"no answer within {timeout:g}s"


async def prove_key(
    stream: trio.abc.Stream, key: bytes, *, timeout: float = HANDSHAKE_TIMEOUT
) -> None:
    """WSL2 half: answer the Windows half's challenge; raise HandshakeFailed."""
    with trio.move_on_after(timeout):
        hello = await _receive_exactly(stream, HELLO_SIZE)
        if hello is None or not hello.startswith(MAGIC):
            raise HandshakeFailed(
                "it closed the connection or sent no tailscale-wsl2 handshake "
                "(is this address outside the subnet it serves?)"
            )
        if hello[len(MAGIC) : len(MAGIC) + 1] != VERSION:
            raise HandshakeFailed("it speaks another handshake version: update both halves")
        await stream.send_all(answer_for(key, hello))
        if await stream.receive_some(1) != ACCEPTED:
            raise HandshakeFailed("it refused the link key: the two halves use different keys")
        return
    raise HandshakeFailed(
        f"it did not start the handshake within {timeout:g}s "
        "(an older Windows half, or one run with --insecure-no-auth?)"
    )
