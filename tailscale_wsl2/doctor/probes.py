"""Network probes for the doctor: a connect whose failure is classified, and one HTTP GET.

Connect failures are sorted here, once, into the few kinds the checks explain differently:
refused (nothing listens), timed out (something drops the packets: a firewall), no route, no
such socket or pipe, permission denied. The words for each come from `describe_connect_error`,
the relay's own, so doctor and the relay's 502 answers say the same thing.

The HTTP client is the least that reads a LocalAPI answer: one request with `Connection: close`,
read to EOF (bounded in size and, like every probe, in time), then split into status, headers
and body. Go's net/http sends a body it cannot size up front chunked, so chunked bodies are
decoded. Failures are returned as values, not raised, because every one of them is a finding.

`identify_peer` asks who holds the Windows half's port, the way `link.mismatch` tells peers
apart: what it says of its own accord (a Windows half that expects the handshake greets at once),
else what it answers to the request curl would send (a Windows half run with --insecure-no-auth
relays it to the LocalAPI; a web server answers for itself; a program that says nothing stays
silent). Bytes that arrive before a reset are kept: they are the answer.
"""

import enum
import errno
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from tailscale_wsl2.link.mismatch import FirstWords, classify_first_words
from tailscale_wsl2.net.connect import describe_connect_error

__all__ = [
    "HttpAnswer",
    "NoAnswer",
    "Unreachable",
    "UnreachableKind",
    "classify_connect_error",
    "http_get",
    "identify_peer",
    "parse_http_answer",
    "status_request",
    "try_connect",
]

# A status document with peers runs to a few hundred KiB on large tailnets.
MAX_ANSWER_BYTES = 8 << 20


class UnreachableKind(enum.Enum):
    REFUSED = "refused"
    TIMED_OUT = "timed out"
    NO_ROUTE = "no route"
    MISSING = "missing"
    DENIED = "denied"
    OTHER = "other"


@dataclass(frozen=True)
class Unreachable:
    """Why a connect failed: the kind the checks branch on, and the words users read."""

    kind: UnreachableKind
    reason: str


def _kind(exc: OSError) -> UnreachableKind:
    if isinstance(exc, TimeoutError):
        return UnreachableKind.TIMED_OUT
    if isinstance(exc, FileNotFoundError):
        return UnreachableKind.MISSING
    if isinstance(exc, PermissionError):
        return UnreachableKind.DENIED
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return UnreachableKind.NO_ROUTE
    if isinstance(exc, ConnectionRefusedError):
        return UnreachableKind.REFUSED
    return UnreachableKind.OTHER


def classify_connect_error(exc: OSError) -> Unreachable:
    return Unreachable(_kind(exc), describe_connect_error(exc))


async def try_connect(
    connect: Callable[[], Awaitable[trio.abc.Stream]], timeout: float
) -> trio.abc.Stream | Unreachable:
    """The connected stream, or why there is none (a timeout counts as TIMED_OUT)."""
    try:
        with trio.fail_after(timeout):
            return await connect()
    except trio.TooSlowError:
        return classify_connect_error(TimeoutError())
    except OSError as exc:
        return classify_connect_error(exc)


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def first_body_line(self) -> str:
        return self.body.decode("utf-8", "replace").strip().partition("\n")[0]


@dataclass(frozen=True)
class NoAnswer:
    """No usable HTTP answer came back; `reason` says what happened instead."""

    reason: str


def _dechunk(body: bytes) -> bytes:
    """Decode a chunked body (extensions and trailers ignored); raise ValueError if cut short."""
    decoded = bytearray()
    while True:
        size_line, separator, body = body.partition(b"\r\n")
        if not separator:
            raise ValueError("chunked body cut short")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return bytes(decoded)
        if len(body) < size:
            raise ValueError("chunked body cut short")
        decoded += body[:size]
        body = body[size + 2 :]


def parse_http_answer(raw: bytes) -> HttpAnswer | NoAnswer:
    """Split a whole HTTP/1.x answer, as read to EOF, into status, headers and body."""
    if not raw:
        return NoAnswer("the connection closed without an answer")
    head, separator, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not separator or not version.startswith("HTTP/1.") or not code.isdigit():
        return NoAnswer(f"not an HTTP answer: {raw[:60]!r}")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in header_lines)
    }
    if "chunked" in headers.get("transfer-encoding", "").lower():
        try:
            body = _dechunk(body)
        except ValueError as exc:
            return NoAnswer(f"a broken HTTP answer: {exc}")
    return HttpAnswer(int(code), headers, body)


async def _read_to_eof(stream: trio.abc.Stream) -> bytes:
    received = bytearray()
    while len(received) < MAX_ANSWER_BYTES and (chunk := await stream.receive_some(65536)):
        received += chunk
    return bytes(received)


def status_request(target: str) -> bytes:
    """The request the `tailscale` CLI makes for `target`, closing the connection after it."""
    return (
        f"GET {target} HTTP/1.1\r\nHost: local-tailscaled.sock\r\nConnection: close\r\n\r\n"
    ).encode()


async def http_get(stream: trio.abc.Stream, target: str, timeout: float) -> HttpAnswer | NoAnswer:
    """GET `target` the way the `tailscale` CLI asks the LocalAPI; closes `stream`."""
    request = status_request(target)
    async with stream:
        try:
            with trio.fail_after(timeout):
                await stream.send_all(request)
                raw = await _read_to_eof(stream)
        except trio.TooSlowError:
            return NoAnswer(f"no answer within {timeout:g} s")
        except (trio.BrokenResourceError, OSError) as exc:
            return NoAnswer(f"the connection broke: {exc}")
    return parse_http_answer(raw)


# Enough of an answer for its status line and headers.
_HEAD_BYTES = 4096


async def _receive_within(
    stream: trio.abc.Stream, seconds: float, *, whole_head: bool
) -> bytes | None:
    """What the peer sends within `seconds`: its first bytes (with `whole_head`, up to the end
    of an HTTP head), b"" when it closed first, None when it sent nothing. A reset after some
    bytes keeps them."""
    received = bytearray()
    with trio.move_on_after(seconds):
        try:
            while chunk := await stream.receive_some(_HEAD_BYTES):
                received += chunk
                if not whole_head or b"\r\n\r\n" in received or len(received) >= _HEAD_BYTES:
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # what came before the reset is the answer
        return bytes(received)
    return bytes(received) or None


async def identify_peer(
    connect: Callable[[], Awaitable[trio.abc.Stream]],
    target: str,
    *,
    listen_for: float,
    timeout: float,
) -> FirstWords | Unreachable:
    """Who answers at `connect`: what it says within `listen_for` of its own accord, else what
    it answers within `timeout` to the request for `target`."""
    connected = await try_connect(connect, timeout)
    if isinstance(connected, Unreachable):
        return connected
    async with connected:
        received = await _receive_within(connected, listen_for, whole_head=False)
        if received is None:
            try:
                await connected.send_all(status_request(target))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return classify_first_words(b"")
            received = await _receive_within(connected, timeout, whole_head=True)
    return classify_first_words(received)
