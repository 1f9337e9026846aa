"""Socket pairs and byte movers shared by the pump, session and splice tests."""

import socket
from collections.abc import Callable

import trio

SocketPairMaker = Callable[[], tuple[socket.socket, socket.socket]]


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` nothing listens on (just now): for a server to come, or a refusal."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def unix_pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    return client, accepted


def shrink_buffers(*socks: socket.socket) -> None:
    for sock in socks:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


async def read_to_eof(sock: trio.socket.SocketType) -> bytes:
    received = bytearray()
    while chunk := await sock.recv(65536):
        received += chunk
    return bytes(received)


async def send_then_eof(sock: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[await sock.send(view[:65536]) :]
    sock.shutdown(socket.SHUT_WR)


def fill(sock: socket.socket) -> int:
    """Send into `sock` until it takes no more; how many bytes it took."""
    sock.setblocking(False)
    taken = 0
    try:
        while True:
            taken += sock.send(b"\xff" * 65536)
    except BlockingIOError:
        return taken
