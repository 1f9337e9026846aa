"""A tiny blocking HTTP/1.1 client over a Unix socket, for end-to-end tests."""

import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def parse_answer(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return Answer(int(status_line.split()[1]), headers, body)


def receive_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def request(path: Path, method: str, target: str, body: bytes = b"") -> Answer:
    """Send one request with `Connection: close` and read the answer to EOF."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        head = (
            f"{method} {target} HTTP/1.1\r\nHost: local-tailscaled.sock\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        return parse_answer(receive_until_closed(sock))
