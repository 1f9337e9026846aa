"""Opening the next hop: the connect timeout, which only a connect that waits pays for."""

import fcntl
import os
import socket
from pathlib import Path

import pytest
import trio
import trio.testing

from tailscale_wsl2.net.connect import Hop, UpstreamUnavailable, hop_connector
from tailscale_wsl2.net.endpoints import TcpEndpoint, UnixEndpoint
from tailscale_wsl2.net.sockets import connect_socket


def full_listener(path: Path) -> list[socket.socket]:
    """A Unix listener whose backlog is full: a new connect gets EAGAIN until it accepts."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(0)
    queued = [listener]
    while True:
        client = socket.socket(socket.AF_UNIX)
        client.setblocking(False)
        queued.append(client)
        if client.connect_ex(str(path)):
            return queued


async def test_a_connect_that_keeps_waiting_gives_up_after_the_timeout(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "busy.sock"
    held = full_listener(path)
    connect = hop_connector(Hop(UnixEndpoint(str(path)), "the LocalAPI", "start it"), timeout=3)
    try:
        started = trio.current_time()
        with pytest.raises(UpstreamUnavailable, match=r"no answer in time.*start it"):
            await connect()
        assert trio.current_time() - started == pytest.approx(3, abs=0.01)
    finally:
        for sock in held:
            sock.close()


async def test_a_connect_that_waits_and_then_gets_in_succeeds(tmp_path: Path) -> None:
    path = tmp_path / "busy.sock"
    listener, *clients = full_listener(path)
    connect = hop_connector(Hop(UnixEndpoint(str(path)), "the LocalAPI", "start it"), timeout=5)
    accepted: list[socket.socket] = []

    def accept_everyone() -> None:
        # The clients that got into the backlog (all but the last), then the relay's connect.
        while len(accepted) < len(clients):
            accepted.append(listener.accept()[0])

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, accept_everyone)
            stream = await connect()
            await stream.aclose()
    finally:
        for sock in (listener, *clients, *accepted):
            sock.close()


@pytest.mark.skipif(not hasattr(socket, "SOCK_NONBLOCK"), reason="Linux creates sockets so")
async def test_a_connected_socket_is_non_blocking_from_its_creation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "up.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(1)
    made_non_blocking_later: list[bool] = []
    set_blocking = socket.socket.setblocking

    def noting_setblocking(sock: socket.socket, flag: bool) -> None:
        made_non_blocking_later.append(flag)
        set_blocking(sock, flag)

    monkeypatch.setattr(socket.socket, "setblocking", noting_setblocking)
    with listener:
        stream = await connect_socket(socket.AF_UNIX, str(path), timeout=5)
        flags = fcntl.fcntl(stream.socket.fileno(), fcntl.F_GETFL)
        assert flags & os.O_NONBLOCK  # by the kernel, at socket()
        assert made_non_blocking_later == []  # so no ioctl afterwards
        stream.close()


async def test_a_loopback_hop_that_gives_no_answer_is_not_blamed_on_a_firewall(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_answer(endpoint: object, *, timeout: float) -> trio.abc.Stream:
        await trio.sleep(timeout)
        raise trio.TooSlowError

    monkeypatch.setattr("tailscale_wsl2.net.connect.open_stream", no_answer)
    fix = "run `tailscale-wsl2.exe up` on Windows"
    loopback = hop_connector(Hop(TcpEndpoint("127.0.0.1", 41113), "the Windows half", fix))
    with pytest.raises(UpstreamUnavailable) as caught:
        await loopback()
    assert str(caught.value) == (
        "the Windows half is not reachable at 127.0.0.1:41113 (no answer in time; on loopback "
        f"a closed port may go unanswered: is it running?); {fix}"
    )
    across = hop_connector(Hop(TcpEndpoint("172.27.64.1", 41113), "the Windows half", fix))
    with pytest.raises(UpstreamUnavailable, match="is a firewall dropping the connection"):
        await across()
