"""Admission by the Windows half, and the WSL2 half's connector, over real loopback TCP."""

import ipaddress
import socket
from collections.abc import Awaitable, Callable
from functools import partial

import pytest
import trio

from tailscale_wsl2.link.admission import admit_windows_peer, authenticated_connector
from tailscale_wsl2.link.handshake import KEY_EXPECTED, accept_link
from tailscale_wsl2.link.mismatch import LinkFixes
from tailscale_wsl2.link.sealed import SealedLink, new_scratch_buffers
from tailscale_wsl2.link.sessions import NO_AUTH_HERE, SESSION_MODE
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


FIXES = LinkFixes(
    windows_up="tailscale-wsl2.exe up",
    windows_up_with_key="tailscale-wsl2.exe up",
    wsl_up="tailscale-wsl2 up",
    wsl_up_with_key="tailscale-wsl2 up",
    doctor="tailscale-wsl2 doctor --port 1",
    windows_doctor="tailscale-wsl2.exe doctor",
)


def windows_half_at(listener: RawSocketListener) -> Hop:
    host, port = listener.socket.getsockname()
    return Hop(TcpEndpoint(host, port), "the Windows half", "start it")


async def test_the_connector_hands_out_sealed_links() -> None:
    listener = RawSocketListener(listening_socket(socket.AF_INET, ("127.0.0.1", 0), 8))
    connect = authenticated_connector(windows_half_at(listener), KEY, FIXES)
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
    connect = authenticated_connector(hop, KEY, FIXES)
    async with listener, trio.open_nursery() as nursery:

        async def other_key() -> None:
            accepted = await listener.accept()
            await accept_link(accepted, bytes(32), new_scratch_buffers(), lambda: None)
            accepted.close()

        nursery.start_soon(other_key)
        with pytest.raises(UpstreamUnavailable) as caught:
            await connect()
    assert str(caught.value) == (
        f"the Windows half at {hop.endpoint} refused the link key: the two halves use "
        "different keys; restart both so they read the same key: `tailscale-wsl2.exe up` on "
        "Windows, then `tailscale-wsl2 up` here"
    )


# --- the connector's words for a peer that is no Windows half expecting the handshake ----------


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

    with trio.fail_after(4):  # before the handshake's 5 s: a banner is no answer
        line = await connect_to(ssh)
    assert line.startswith("another program holds 127.0.0.1:")
    assert "it sent b'SSH-2.0-OpenSSH_9.6\\r\\n'" in line


async def test_a_close_before_the_answer_is_not_blamed_on_keys() -> None:
    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.aclose()

    line = await connect_to(hang_up)
    assert "closed the connection before the handshake" in line
    assert "key" not in line


async def test_a_windows_half_without_the_handshake_is_named_at_once() -> None:
    async def insecure(stream: trio.SocketStream) -> None:
        await stream.send_all(NO_AUTH_HERE)  # what one run with --insecure-no-auth answers
        await trio.sleep_forever()

    with trio.fail_after(4):
        line = await connect_to(insecure)
    assert line == (
        f"the Windows half at {line.split()[4]} runs with --insecure-no-auth, and this half "
        "expects the link handshake; restart it without --insecure-no-auth: "
        "`tailscale-wsl2.exe up` on Windows"
    )


async def test_an_older_windows_half_is_named_by_its_hello() -> None:
    async def first_version(stream: trio.SocketStream) -> None:
        await stream.send_all(b"TSWSL\x01" + bytes(32))  # it speaks first
        await trio.sleep_forever()

    with trio.fail_after(4):
        line = await connect_to(first_version)
    assert "is an older tailscale-wsl2 (link version 1; this half speaks 2)" in line
    assert "upgrade both halves to the same release" in line


async def test_a_session_mode_byte_is_named_as_an_insecure_wsl2_half() -> None:
    listener = RawSocketListener(listening_socket(socket.AF_INET, ("127.0.0.1", 0), 8))
    async with listener:
        with socket.create_connection(listener.socket.getsockname()) as client:
            async with await listener.accept() as server_side:
                client.sendall(SESSION_MODE)  # what a WSL2 half run with --insecure-no-auth sends
                with trio.fail_after(4):  # at once, not at the handshake's deadline
                    refusal = await admit_windows_peer(
                        server_side,
                        ipaddress.ip_network("127.0.0.0/8"),
                        KEY,
                        new_scratch_buffers(),
                        never_opened,
                    )
            # Told so in return, so that its 502 names the mismatch (sessions.LinkOutOfStep).
            assert client.recv(16) == KEY_EXPECTED
    # The peer's address is the relay's to add (relay/pending.py logs per peer).
    assert refusal == (
        "it started a link without the handshake: the WSL2 half runs with "
        "--insecure-no-auth and this half without it"
    )
