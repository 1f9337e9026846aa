"""A stand-in for Tailscale's LocalAPI, for tests and benchmarks.

It speaks just enough HTTP/1.1 (keep-alive, Content-Length and chunked bodies)
to play the daemon's part in the traffic shapes a relay must carry:

- `GET /localapi/v0/status`: a realistic status document, with the
  `Tailscale-Version` header every daemon response carries;
- `GET /localapi/v0/watch-ipn-bus`: newline-delimited JSON, one message per
  tick, for as long as the client stays;
- `PUT /localapi/v0/file-put/<id>/<name>`: a streamed upload (Taildrop); the
  answer gives the byte count and SHA-256 of what arrived;
- `GET /standin/download?bytes=N`: N deterministic bytes (not a LocalAPI path:
  it gives the tests and the benchmark a large download);
- `POST /localapi/v0/dial` with `Upgrade: ts-dial`: `101`, then it echoes raw
  bytes (the shape of `tailscale nc`).

Run it as `python -m tests.support.localapi_standin unix:PATH` or `tcp:HOST:PORT`.
"""

import hashlib
import json
import socket
import sys
from pathlib import Path

import trio

DAEMON_VERSION = "1.76.6-t1234abcd-g5678ef90"
STATUS = {
    "Version": DAEMON_VERSION,
    "BackendState": "Running",
    "TailscaleIPs": ["100.101.102.103", "fd7a:115c:a1e0::1"],
    "Self": {
        "HostName": "DESKTOP-WIN11",
        "DNSName": "desktop-win11.tail1234.ts.net.",
        "OS": "windows",
        "TailscaleIPs": ["100.101.102.103", "fd7a:115c:a1e0::1"],
        "Online": True,
    },
    "MagicDNSSuffix": "tail1234.ts.net",
}
DOWNLOAD_PATTERN = bytes(range(256)) * 1024
WATCH_TICK = 0.02


def download_bytes(count: int) -> bytes:
    """The first `count` bytes of the download pattern (what the tests expect)."""
    whole, rest = divmod(count, len(DOWNLOAD_PATTERN))
    return DOWNLOAD_PATTERN * whole + DOWNLOAD_PATTERN[:rest]


class Reader:
    """Buffered reads over a trio stream: lines, exact counts, chunked bodies."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def _fill(self) -> bool:
        chunk = await self.stream.receive_some(262144)
        self.buffer += chunk
        return bool(chunk)

    async def until(self, marker: bytes) -> bytes | None:
        while (end := self.buffer.find(marker)) < 0:
            if not await self._fill():
                return None
        data = bytes(self.buffer[: end + len(marker)])
        del self.buffer[: end + len(marker)]
        return data

    async def body(self, length: int, sink: "hashlib._Hash") -> int:
        remaining = length
        while remaining:
            if not self.buffer and not await self._fill():
                raise EOFError("body cut short")
            take = min(remaining, len(self.buffer))
            sink.update(self.buffer[:take])
            del self.buffer[:take]
            remaining -= take
        return length

    async def chunked_body(self, sink: "hashlib._Hash") -> int:
        total = 0
        while True:
            size_line = await self.until(b"\r\n")
            if size_line is None:
                raise EOFError("chunked body cut short")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                await self.until(b"\r\n")
                return total
            total += await self.body(size, sink)
            await self.until(b"\r\n")


def response(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Tailscale-Version: {DAEMON_VERSION}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def watch_ipn_bus(stream: trio.abc.Stream) -> None:
    await stream.send_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + f"Tailscale-Version: {DAEMON_VERSION}\r\n".encode()
        + b"Transfer-Encoding: chunked\r\n\r\n"
    )
    sequence = 0
    while True:
        line = json.dumps({"Seq": sequence, "State": 6}).encode() + b"\n"
        await stream.send_all(b"%x\r\n%s\r\n" % (len(line), line))
        sequence += 1
        await trio.sleep(WATCH_TICK)


async def echo_forever(stream: trio.abc.Stream, reader: Reader) -> None:
    await stream.send_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: ts-dial\r\n\r\n")
    if reader.buffer:
        await stream.send_all(bytes(reader.buffer))
    while data := await stream.receive_some(262144):
        await stream.send_all(data)


async def handle(stream: trio.abc.Stream) -> None:
    reader = Reader(stream)
    async with stream:
        while head := await reader.until(b"\r\n\r\n"):
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            _method, target, _ = request_line.split(" ", 2)
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in header_lines if line)
            }
            digest = hashlib.sha256()
            if headers.get("transfer-encoding", "").lower() == "chunked":
                received = await reader.chunked_body(digest)
            else:
                received = await reader.body(int(headers.get("content-length", "0")), digest)
            path, _, query = target.partition("?")
            if path == "/localapi/v0/status":
                await stream.send_all(response("200 OK", json.dumps(STATUS).encode()))
            elif path == "/localapi/v0/watch-ipn-bus":
                await watch_ipn_bus(stream)
            elif path == "/localapi/v0/dial" and headers.get("upgrade") == "ts-dial":
                await echo_forever(stream, reader)
                return
            elif path.startswith("/localapi/v0/file-put/"):
                answer = {"bytes": received, "sha256": digest.hexdigest()}
                await stream.send_all(response("200 OK", json.dumps(answer).encode()))
            elif path == "/standin/download":
                count = int(query.removeprefix("bytes="))
                await stream.send_all(response("200 OK", download_bytes(count), "text/plain"))
            else:
                await stream.send_all(response("404 Not Found", b'{"error":"not found"}'))
            if headers.get("connection", "").lower() == "close":
                return


async def handle_quietly(stream: trio.abc.Stream) -> None:
    try:
        await handle(stream)
    except (trio.BrokenResourceError, trio.ClosedResourceError, EOFError, OSError):
        pass  # a client that leaves early is part of what the tests do


async def serve(
    where: str,
    *,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    kind, _, rest = where.partition(":")
    if kind == "unix" and sys.platform != "win32":
        Path(rest).unlink(missing_ok=True)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(rest)
        sock.listen(4096)
        listeners = [trio.SocketListener(sock)]
    else:
        host, _, port = rest.rpartition(":")
        listeners = await trio.open_tcp_listeners(int(port), host=host, backlog=4096)
    await trio.serve_listeners(handle_quietly, listeners, task_status=task_status)


if __name__ == "__main__":
    try:
        trio.run(serve, sys.argv[1])
    except KeyboardInterrupt:
        pass
