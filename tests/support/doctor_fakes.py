"""Stand-ins for the doctor's tests: servers that play a Windows half, a relay or a foreign
program, and canned system look-ups."""

import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import NoReturn

import trio

from tailscale_wsl2.link.handshake import accept_link
from tailscale_wsl2.link.sealed import SealedSession, new_scratch_buffers
from tailscale_wsl2.net.sockets import RawSocketStream
from tests.support import FIXTURES, localapi_standin

Handler = Callable[[trio.abc.Stream], Awaitable[None]]
KEY = bytes(range(32))


def fixture(name: str) -> str:
    return (FIXTURES / name).read_bytes().decode("utf-8")


def never(*args: object) -> NoReturn:
    raise AssertionError("this look-up must not run here")


def status_answer(**self_fields: object) -> bytes:
    status = json.loads(json.dumps(localapi_standin.STATUS))
    status["Self"].update(self_fields)
    return localapi_standin.response("200 OK", json.dumps(status).encode())


def plain_answer(code: str, line: str) -> bytes:
    body = (line + "\n").encode()
    return (
        f"HTTP/1.1 {code}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def read_head(stream: trio.abc.Stream) -> None:
    seen = b""
    while b"\r\n\r\n" not in seen and (chunk := await stream.receive_some(4096)):
        seen += chunk


def answering(answer: bytes, key: bytes | None = None) -> Handler:
    """A handler that (after the link handshake, when `key` is given) answers any request."""

    async def handle(stream: trio.abc.Stream) -> None:
        async with stream:
            if key is None:
                await read_head(stream)
                await stream.send_all(answer)
                return
            assert isinstance(stream, trio.SocketStream)
            raw = RawSocketStream(socket.socket(fileno=stream.socket.detach()))
            try:
                link = await accept_link(raw, key, new_scratch_buffers(), lambda: None)
                if isinstance(link, str):
                    return
                session = SealedSession(link)  # what a Windows half relays: one session
                if await session.begin():  # not closed before a session began
                    await read_head(session)
                    await session.send_all(answer)
                    await session.send_eof()
            finally:
                raw.close()

    return handle


async def silent(stream: trio.abc.Stream) -> None:
    async with stream:
        await trio.sleep_forever()


async def _serve(listener: trio.SocketListener, handler: Handler) -> None:
    async with listener, trio.open_nursery() as nursery:
        while True:
            nursery.start_soon(handler, await listener.accept())


@asynccontextmanager
async def tcp_server(handler: Handler) -> AsyncIterator[int]:
    """Serve on 127.0.0.1; yields the port."""
    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve, listener, handler)
        yield listener.socket.getsockname()[1]
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def unix_server(path: Path, handler: Handler) -> AsyncIterator[None]:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(16)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve, trio.SocketListener(sock), handler)
        yield
        nursery.cancel_scope.cancel()


def leave_stale_socket(path: Path) -> None:
    """A socket file nobody answers on: what a killed relay leaves."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
