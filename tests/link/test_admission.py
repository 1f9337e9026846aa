"""Admission by the Windows half, and the WSL2 half's connector, over real loopback TCP."""

import ipaddress
import socket

import pytest
import trio

from tailscale_wsl2.link.admission import admit_windows_peer, authenticated_connector
from tailscale_wsl2.link.handshake import accept_link
from tailscale_wsl2.link.sealed import SealedLink, new_scratch_buffers
from tailscale_wsl2.net.connect import Hop, UpstreamUnavailable
from tailscale_wsl2.net.endpoints import TcpEndpoint
from tailscale_wsl2.net.sockets import RawSocketListener, RawSocketStream, listening_socket

KEY = bytes(range(32))


def never_opened() -> None:
    raise AssertionError("no handshake may begin for this peer")


async def admitted(allowed: str) -> trio.abc.AsyncResource | str:
    """The admission verdict for a loopback connection when `allowed` may connect."""
    listener = RawSocketListener(listening_socket(socket.AF_INET, ("127.0.0.1", 0), 8))
    async with listener:
        with socket.create_connection(listener.socket.getsockname()):
            async with await listener.accept() as server_side:
                return await admit_windows_peer(
                    server_side,
                    ipaddress.ip_network(allowed),
                    None,
                    new_scratch_buffers(),
                    never_opened,
                )


async def test_a_peer_outside_the_subnet_is_refused_before_any_handshake() -> None:
    assert await admitted("172.27.64.0/20") == "127.0.0.1 is outside 172.27.64.0/20"


async def test_a_peer_inside_the_subnet_is_admitted_without_auth() -> None:
    assert isinstance(await admitted("127.0.0.0/8"), RawSocketStream)


def windows_half_at(listener: RawSocketListener) -> Hop:
    host, port = listener.socket.getsockname()
    return Hop(TcpEndpoint(host, port), "the Windows half", "start it")


async def test_the_connector_hands_out_sealed_links() -> None:
    listener = RawSocketListener(listening_socket(socket.AF_INET, ("127.0.0.1", 0), 8))
    connect = authenticated_connector(windows_half_at(listener), KEY)
    async with listener, trio.open_nursery() as nursery:

        async def windows() -> None:
            accepted = await listener.accept()
            verdict = await accept_link(accepted, KEY, new_scratch_buffers(), lambda: None)
            assert isinstance(verdict, SealedLink)
            accepted.close()

        nursery.start_soon(windows)
        link = await connect()
        assert isinstance(link, SealedLink)
        link.close()


async def test_the_connector_names_the_hop_and_the_cause() -> None:
    listener = RawSocketListener(listening_socket(socket.AF_INET, ("127.0.0.1", 0), 8))
    hop = windows_half_at(listener)
    connect = authenticated_connector(hop, KEY)
    async with listener, trio.open_nursery() as nursery:

        async def other_key() -> None:
            accepted = await listener.accept()
            await accept_link(accepted, bytes(32), new_scratch_buffers(), lambda: None)
            accepted.close()

        nursery.start_soon(other_key)
        with pytest.raises(UpstreamUnavailable) as caught:
            await connect()
    assert str(caught.value) == (
        f"the Windows half at {hop.endpoint} failed the link handshake: it refused the link "
        "key: the two halves use different keys; run `tailscale-wsl2 doctor` here"
    )
