"""Admission by the Windows half, over real loopback TCP."""

import ipaddress
import socket
from collections.abc import Awaitable, Callable
from functools import partial

import pytest
import trio

from tailscale_wsl2.link.admission import admit_windows_peer, authenticated_connector
from tailscale_wsl2.link.mismatch import LinkFixes
from tailscale_wsl2.link.sessions import SESSION_MODE
from tailscale_wsl2.net.connect import Hop, UpstreamUnavailable
from tailscale_wsl2.net.endpoints import TcpEndpoint
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


# --- the connector's words for a peer that is no Windows half expecting the handshake ----------


FIXES = LinkFixes(
    windows_up="tailscale-wsl2.exe up",
    windows_up_with_key="tailscale-wsl2.exe up",
    wsl_up="tailscale-wsl2 up",
    wsl_up_with_key="tailscale-wsl2 up",
    doctor="tailscale-wsl2 doctor --port 1",
    windows_doctor="tailscale-wsl2.exe doctor",
)


async def connect_to(handler: Callable[[trio.SocketStream], Awaitable[None]]) -> str:
    """The UpstreamUnavailable line of the WSL2 half's connector against `handler`."""
    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        hop = Hop(TcpEndpoint("127.0.0.1", port), "the Windows half of tailscale-wsl2", "FIX")
        with pytest.raises(UpstreamUnavailable) as caught:
            await authenticated_connector(hop, bytes(32), FIXES)()
        nursery.cancel_scope.cancel()
    return str(caught.value)


async def test_a_banner_names_another_program_at_once() -> None:
    async def ssh(stream: trio.SocketStream) -> None:
        await stream.send_all(b"SSH-2.0-OpenSSH_9.6\r\n")
        await trio.sleep_forever()

    with trio.fail_after(4):  # before the handshake's 5 s: a banner is no hello
        line = await connect_to(ssh)
    assert line.startswith("another program holds 127.0.0.1:")
    assert "it sent b'SSH-2.0-OpenSSH_9.6\\r\\n'" in line


async def test_a_close_before_the_hello_is_not_blamed_on_keys() -> None:
    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.aclose()

    line = await connect_to(hang_up)
    assert "closed the connection before the handshake" in line
    assert "key" not in line


async def test_a_session_mode_byte_is_named_as_an_insecure_wsl2_half() -> None:
    listener = RawSocketListener(listening_socket(socket.AF_INET, ("127.0.0.1", 0), 8))
    async with listener:
        with socket.create_connection(listener.socket.getsockname()) as client:
            async with await listener.accept() as server_side:
                client.sendall(SESSION_MODE)  # what a WSL2 half run with --insecure-no-auth sends
                with trio.fail_after(4):  # at once, not at the handshake's deadline
                    refusal = await admit_windows_peer(
                        server_side, ipaddress.ip_network("127.0.0.0/8"), bytes(32)
                    )
    assert refusal == (
        "127.0.0.1: it started a link without the handshake: the WSL2 half runs with "
        "--insecure-no-auth and this half without it"
    )
