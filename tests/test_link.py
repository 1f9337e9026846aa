"""Admission by the Windows half, over real loopback TCP."""

import ipaddress
import socket

import trio

from tailscale_wsl2.link import windows_admission


async def admitted(allowed: str) -> str | None:
    """The admission verdict for a loopback connection when `allowed` may connect."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    async with listener:
        client = socket.create_connection(("127.0.0.1", port))
        server_side = await listener.accept()
        verdict = await windows_admission(ipaddress.ip_network(allowed), None)(server_side)
        client.close()
        await server_side.aclose()
    return verdict


async def test_a_peer_outside_the_subnet_is_refused_before_any_handshake() -> None:
    assert await admitted("172.27.64.0/20") == "127.0.0.1 is outside 172.27.64.0/20"


async def test_a_peer_inside_the_subnet_is_admitted_without_auth() -> None:
    assert await admitted("127.0.0.0/8") is None
