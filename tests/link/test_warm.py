"""Warm links: taken at once when parked, dropped when dead, opened on demand otherwise."""

import socket
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from tailscale_wsl2.link.warm import SPARE_IDLE_SECONDS, WarmLinks
from tailscale_wsl2.net.connect import UpstreamUnavailable
from tailscale_wsl2.net.sockets import RawSocketStream


class FakeWindowsHalf:
    """Hands out one end of a socket pair per connect; keeps the other end."""

    def __init__(self) -> None:
        self.far_ends: list[socket.socket] = []
        self.down = False

    async def connect(self) -> RawSocketStream:
        await trio.lowlevel.checkpoint()
        if self.down:
            raise UpstreamUnavailable("the Windows half is down")
        near, far = socket.socketpair()
        self.far_ends.append(far)
        return RawSocketStream(near)

    def close(self) -> None:
        for far in self.far_ends:
            far.close()


@pytest.fixture
def windows_half() -> Iterator[FakeWindowsHalf]:
    half = FakeWindowsHalf()
    yield half
    half.close()


async def test_links_are_parked_ahead_and_taken_without_connecting(
    windows_half: FakeWindowsHalf,
) -> None:
    warm = WarmLinks(windows_half.connect, size=3, max_parked=8)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(warm.keep_warm)
        await trio.testing.wait_all_tasks_blocked()
        assert len(windows_half.far_ends) == 3
        link = await warm.take()
        assert isinstance(link, RawSocketStream)
        opened = [far.getsockname() for far in windows_half.far_ends]
        assert link.socket.getpeername() in opened
        await trio.testing.wait_all_tasks_blocked()
        assert len(windows_half.far_ends) == 4  # refilled
        await link.aclose()
        warm.close()


async def test_a_link_closed_while_parked_is_skipped(windows_half: FakeWindowsHalf) -> None:
    warm = WarmLinks(windows_half.connect, size=2, max_parked=8)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(warm.keep_warm)
        await trio.testing.wait_all_tasks_blocked()
        windows_half.far_ends[0].close()  # the Windows half restarted
        link = await warm.take()
        assert isinstance(link, RawSocketStream)
        assert link.socket.getpeername() == windows_half.far_ends[1].getsockname()
        await link.aclose()
        warm.close()


async def test_when_the_windows_half_is_down_take_raises_and_refills_back_off(
    windows_half: FakeWindowsHalf, autojump_clock: trio.testing.MockClock
) -> None:
    windows_half.down = True
    warm = WarmLinks(windows_half.connect, size=2, max_parked=8)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(warm.keep_warm)
        with pytest.raises(UpstreamUnavailable, match="is down"):
            await warm.take()
        windows_half.down = False
        await trio.sleep(10)  # longer than the longest back-off
        assert len(windows_half.far_ends) == 2
        warm.close()


async def test_take_parked_never_connects_and_asks_for_a_refill(
    windows_half: FakeWindowsHalf,
) -> None:
    warm = WarmLinks(windows_half.connect, size=1, max_parked=8)
    assert warm.take_parked() is None  # nothing parked: no connect, no wait
    assert windows_half.far_ends == []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(warm.keep_warm)
        await trio.testing.wait_all_tasks_blocked()
        link = warm.take_parked()
        assert link is not None
        assert link.socket.getpeername() == windows_half.far_ends[0].getsockname()
        await trio.testing.wait_all_tasks_blocked()
        assert len(windows_half.far_ends) == 2  # the pool refilled behind it
        link.close()
        warm.close()


async def test_links_given_back_are_kept_up_to_max_parked_and_the_rest_closed(
    windows_half: FakeWindowsHalf,
) -> None:
    warm = WarmLinks(windows_half.connect, size=0, max_parked=2)
    links = [await warm.take() for _ in range(3)]  # a burst: each connected on demand
    for link in links:
        warm.park(link)
    assert [link.socket.fileno() == -1 for link in links] == [False, False, True]
    assert warm.take_parked() is links[1]  # the most recently parked first
    assert warm.take_parked() is links[0]
    assert warm.take_parked() is None
    for link in links:
        link.close()


async def test_a_link_given_back_in_the_same_pass_is_taken_instead_of_a_new_one(
    windows_half: FakeWindowsHalf,
) -> None:
    warm = WarmLinks(windows_half.connect, size=0, max_parked=8)
    link = await warm.take()  # none parked: connected on demand
    async with trio.open_nursery() as nursery:

        async def finish_session() -> None:
            warm.park(link)  # the last session's end, ready to run as the next one asks

        nursery.start_soon(finish_session)
        assert await warm.take() is link
    assert len(windows_half.far_ends) == 1  # no second connect (and handshake)
    link.close()


async def test_after_a_burst_the_links_a_steady_client_does_not_need_idle_out(
    windows_half: FakeWindowsHalf, autojump_clock: trio.testing.MockClock
) -> None:
    warm = WarmLinks(windows_half.connect, size=1, max_parked=8)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(warm.keep_warm)
        burst = [await warm.take() for _ in range(4)]
        for link in burst:
            warm.park(link)
        # One client goes on, a connection a second: each time the link it gave back.
        for _ in range(int(SPARE_IDLE_SECONDS) * 3):
            steady = warm.take_parked()
            assert steady is not None
            await trio.sleep(1)
            warm.park(steady)
        await trio.testing.wait_all_tasks_blocked()
        still_open = [link for link in burst if link.socket.fileno() != -1]
        # Taken oldest first, every link would have been used within 5 s, and none closed.
        assert len(still_open) == 1, still_open
        warm.close()
