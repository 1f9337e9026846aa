"""Admission by the Windows half, over real loopback TCP."""

import ipaddress
import socket

from tailscale_wsl2.link.admission import admit_windows_peer
from tailscale_wsl2.net.sockets import RawSocketListener, listening_socket


async def admitted(allowed: str) -> str | None:
    """The admission verdict for a loopback connection when `allowed` may connect."""
    listener = RawSocketListener(listening_socket(socket.AF_INET, ("127.0.0.1", 0), 8))
    async with listener:
        with socket.create_connection(listener.socket.getsockname()):
            async with await listener.accept() as server_side:
                return await admit_windows_peer(server_side, ipaddress.ip_network(allowed), None)


async def test_a_peer_outside_the_subnet_is_refused_before_any_handshake() -> None:
    assert await admitted("172.27.64.0/20") == "127.0.0.1 is outside 172.27.64.0/20"


async def test_a_peer_inside_the_subnet_is_admitted_without_auth() -> None:
    assert await admitted("127.0.0.0/8") is None
