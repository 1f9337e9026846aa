"""The answer a client gets when the next hop is down: HTTP 502 with one line.

Closing the connection would leave the `tailscale` CLI with a bare "connection
reset" and no clue which of the three hops failed. Every LocalAPI client speaks
HTTP/1.1 first, so the relay answers like an HTTP proxy would: it reads the
request head (bounded in size and time, since a client that is not HTTP may
send nothing), answers `502 Bad Gateway` with a one-line plain-text body that
the CLI prints, and lingers briefly before closing so that unread request bytes
do not turn the close into a reset that destroys the answer in flight. The answer
names this program in its `Server` header, so that doctor can tell it from any
other server's.
"""

import trio

from tailscale_wsl2.facts import PROGRAM

__all__ = ["answer_bad_gateway", "bad_gateway_response"]

MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT = 2.0
LINGER_TIMEOUT = 1.0


def bad_gateway_response(message: str) -> bytes:
    body = (" ".join(message.split()) + "\n").encode()
    head = (
        "HTTP/1.1 502 Bad Gateway\r\n"
        f"Server: {PROGRAM}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "\r\n"
    )
    return head.encode() + body


async def _read_head(stream: trio.abc.Stream) -> None:
    """Read until the end of the request head, EOF, or MAX_HEAD_BYTES."""
    seen = bytearray()
    while len(seen) < MAX_HEAD_BYTES and b"\r\n\r\n" not in seen:
        chunk = await stream.receive_some(16384)
        if not chunk:
            return
        seen += chunk


async def _discard(stream: trio.abc.Stream) -> None:
    """Read and drop what the client still sends, up to EOF or MAX_HEAD_BYTES."""
    discarded = 0
    while discarded < MAX_HEAD_BYTES:
        chunk = await stream.receive_some(16384)
        if not chunk:
            return
        discarded += len(chunk)


async def answer_bad_gateway(client: trio.abc.Stream, message: str) -> None:
    """Answer `client` with a 502 carrying `message`; never raises on a dead peer."""
    try:
        with trio.move_on_after(HEAD_TIMEOUT):
            await _read_head(client)
        await client.send_all(bad_gateway_response(message))
        if isinstance(client, trio.abc.HalfCloseableStream):
            await client.send_eof()
        with trio.move_on_after(LINGER_TIMEOUT):
            await _discard(client)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the client left first; there is nobody to tell
