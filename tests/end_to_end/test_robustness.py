"""Robustness of the whole chain, proven on loopback and bounded in count and time.

Every test runs the real subprocess chain (LocalAPI stand-in <- Windows half <-
WSL2 half), once with the package and once with the frozen binary, and checks
what the halves cost the system from /proc (`procstats.py`):

- bad input: thousands of random and malformed handshakes reach nothing;
- slow and stuck peers: dropped at the handshake deadline without blocking
  anyone, and a slow reader cannot make a half buffer the download in memory;
- load: a thousand connections held open through both halves at once, twice,
  leave no descriptor or memory behind;
- faults: an upstream killed mid-stream, either hop restarted, SIGTERM with
  transfers in flight.

No assertion depends on the machine's speed: waits are generous and bounded,
and the only timings asserted are coarse ("well within the handshake deadline").
"""

import fcntl
import hashlib
import random
import resource
import signal
import socket
import struct
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from termios import FIONREAD

import pytest
import trio

from tailscale_wsl2.link.handshake import (
    ACCEPTED,
    ANSWER_SIZE,
    HANDSHAKE_TIMEOUT,
    HELLO_SIZE,
    MAGIC,
    VERSION,
    answer_for,
)
from tailscale_wsl2.link.key import load_key
from tailscale_wsl2.tuning.open_files import raise_open_file_limit
from tests.support.chain import (
    FROZEN_BINARY,
    Chain,
    connectable,
    running_chain,
    start_process,
    wait_for_process,
)
from tests.support.http_client import Answer, request
from tests.support.localapi_standin import Reader
from tests.support.procstats import fd_count, program_pid, rss_bytes, settle

MiB = 1 << 20
# How long descriptors may take to come back after the connections holding them end.
SETTLE_TIMEOUT = 30.0
KEEP_ALIVE_STATUS = b"GET /localapi/v0/status HTTP/1.1\r\nHost: x\r\n\r\n"
CLOSING_STATUS = b"GET /localapi/v0/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@pytest.fixture(autouse=True, scope="module")
def _many_descriptors() -> Iterator[None]:
    """The load tests hold a thousand connections in this process too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    raise_open_file_limit()  # as the halves do
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def chain(program: list[str], tmp_path: Path) -> Iterator[Chain]:
    with running_chain(program, tmp_path) as chain:
        yield chain
        # The WSL2 half first: the links it keeps open to the Windows half would
        # otherwise hold the Windows half for its whole shutdown grace period.
        if "wsl" in chain.processes:
            chain.stop("wsl")


@dataclass
class Half:
    """One running half, seen through /proc (the program, not a bootloader)."""

    name: str
    pid: int

    def fds(self) -> int:
        return fd_count(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    async def fds_back_to(self, baseline: int) -> int:
        """The descriptor count once it is back to `baseline` (or after the timeout)."""
        return await settle(self.fds, lambda count: count <= baseline, SETTLE_TIMEOUT)


def half(chain: Chain, name: str) -> Half:
    return Half(name, program_pid(chain.processes[name].popen.pid, FROZEN_BINARY))


async def steady_fds(target: Half) -> int:
    """The descriptor count once it has stopped changing (start-up probes ending)."""
    previous = -1
    for _ in range(100):
        if (count := target.fds()) == previous:
            return count
        previous = count
        await trio.sleep(0.1)
    raise AssertionError(f"the {target.name} half's descriptor count never settled")


async def get(chain: Chain, target: str = "/localapi/v0/status") -> Answer:
    """One request through the whole chain (a blocking client, run in a thread)."""
    return await trio.to_thread.run_sync(request, chain.socket, "GET", target)


async def stop(chain: Chain, name: str) -> int:
    """Stop a process without blocking this test's own connections meanwhile."""
    return await trio.to_thread.run_sync(chain.stop, name)


async def receive_until_closed(stream: trio.abc.Stream) -> bytes:
    """Everything until the peer closes; a reset counts as closing."""
    received = bytearray()
    try:
        while chunk := await stream.receive_some(65536):
            received += chunk
    except trio.BrokenResourceError:
        pass
    return bytes(received)


async def read_response(reader: Reader) -> int:
    """Read one HTTP response with a Content-Length body; its status."""
    head = await reader.until(b"\r\n\r\n")
    assert head is not None, "connection closed before an answer"
    lines = head.decode("latin-1").split("\r\n")
    headers = {n.strip().lower(): v.strip() for n, _, v in (line.partition(":") for line in lines)}
    await reader.body(int(headers["content-length"]), hashlib.sha256())
    return int(lines[0].split()[1])


# --- Bad input -------------------------------------------------------------------------------


class CountingUpstream:
    """The Windows half's upstream: counts connections, passes them to the stand-in."""

    def __init__(self, listen: Path, standin: Path) -> None:
        self.listen = listen
        self.standin = standin
        self.accepted = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(str(self.listen))
        sock.listen(128)
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._forward, [trio.SocketListener(sock)])
            task_status.started()

    async def _forward(self, client: trio.SocketStream) -> None:
        self.accepted += 1
        async with client, await trio.open_unix_socket(str(self.standin)) as standin:

            async def pump(src: trio.SocketStream, dst: trio.SocketStream) -> None:
                try:
                    while chunk := await src.receive_some(65536):
                        await dst.send_all(chunk)
                    await dst.send_eof()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    nursery.cancel_scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, client, standin)
                nursery.start_soon(pump, standin, client)


FUZZ_CASES = 10_000
FUZZ_CONCURRENCY = 200


async def receive_hello(stream: trio.SocketStream) -> bytes:
    hello = bytearray()
    while len(hello) < HELLO_SIZE:
        chunk = await stream.receive_some(HELLO_SIZE - len(hello))
        assert chunk, "the Windows half closed before its hello"
        hello += chunk
    assert hello.startswith(MAGIC + VERSION)
    return bytes(hello)


def bad_answer(kind: int, rng: random.Random, key: bytes, hello: bytes) -> bytes:
    """A wrong answer to `hello`, of the given kind (anything but the right answer)."""
    right = answer_for(key, hello)
    answers: list[Callable[[], bytes]] = [
        lambda: b"",  # nothing
        lambda: rng.randbytes(rng.randrange(1, ANSWER_SIZE)),  # truncated noise
        lambda: rng.randbytes(ANSWER_SIZE),  # noise of the right size
        lambda: VERSION + rng.randbytes(ANSWER_SIZE - 1),  # the right version, a wrong MAC
        lambda: b"\x02" + right[1:],  # the right MAC, another version
        lambda: right[: rng.randrange(1, ANSWER_SIZE)],  # the right answer, truncated
        lambda: right + rng.randbytes(rng.randrange(1, 64)),  # the right answer, too long
        lambda: rng.randbytes(rng.randrange(ANSWER_SIZE + 1, 8192)),  # oversized noise
        lambda: answer_for(rng.randbytes(32), hello),  # another key
        lambda: answer_for(key, MAGIC + VERSION + rng.randbytes(32)),  # a replayed answer
        lambda: b"GET /localapi/v0/status HTTP/1.1\r\nHost: x\r\n\r\n",  # no handshake at all
        lambda: (
            bytes(a ^ b for a, b in zip(right, rng.randbytes(ANSWER_SIZE), strict=True)) or b"\x00"
        ),  # bit flips (an all-zero mask is vanishingly unlikely)
    ]
    answer = answers[kind % len(answers)]()
    assert answer != right
    return answer


async def fuzz_one(port: int, case: int, key: bytes, outcomes: Counter[str]) -> None:
    """One malformed handshake, its shape drawn from `case` (reproducible)."""
    rng = random.Random(case)
    style = rng.choice(["close", "reset", "hello-then-close", "answer", "blind", "dribble"])
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        if style == "close":  # connect and leave
            outcomes[style] += 1
            return
        if style == "reset":  # connect and reset
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            outcomes[style] += 1
            return
        hello = b""
        if style != "blind":  # "blind" never reads the hello (an old or foreign client)
            hello = await receive_hello(stream)
        if style == "hello-then-close":
            outcomes[style] += 1
            return
        answer = bad_answer(rng.randrange(1 << 16), rng, key, hello or b"-" * HELLO_SIZE)
        try:
            if style == "dribble":  # the answer a few bytes at a time
                for start in range(0, len(answer), 7):
                    await stream.send_all(answer[start : start + 7])
            else:
                await stream.send_all(answer)
            await stream.send_eof()  # a short answer must not wait for the deadline
        except trio.BrokenResourceError:
            outcomes[f"{style}: reset while sending"] += 1
            return
        rest = await receive_until_closed(stream)
    if style == "blind":
        rest = rest[HELLO_SIZE:] if rest.startswith(MAGIC + VERSION) else rest
    # The verdict: never ACCEPTED, only the connection closing.
    assert rest == b"", f"case {case}: after a bad answer the Windows half sent {rest!r}"
    outcomes[style] += 1


async def authenticated_status(port: int, key: bytes) -> int:
    """Do the WSL2 half's part of the handshake by hand, then ask for the status."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(answer_for(key, await receive_hello(stream)))
        assert await stream.receive_some(1) == ACCEPTED
        await stream.send_all(CLOSING_STATUS)
        return await read_response(Reader(stream))


# Its own deadlines add up to 150 s past start-up: the general limit would pre-empt them.
@pytest.mark.timeout(300)
async def test_malformed_handshakes_reach_nothing(program: list[str], tmp_path: Path) -> None:
    chain = Chain(program, tmp_path)
    standin = tmp_path / "standin.sock"
    counting = CountingUpstream(chain.localapi_socket, standin)
    try:
        argv = [sys.executable, "-m", "tests.support.localapi_standin", f"unix:{standin}"]
        process = start_process(argv, tmp_path / "standin.log")
        chain.processes["standin"] = process
        wait_for_process(lambda: connectable(socket.AF_UNIX, str(standin)), process, "the stand-in")
        async with trio.open_nursery() as nursery:
            await nursery.start(counting.serve)
            chain.start_windows_half()
            windows = half(chain, "windows")
            key = load_key(chain.key_file)
            baseline = await steady_fds(windows)

            outcomes: Counter[str] = Counter()
            limiter = trio.CapacityLimiter(FUZZ_CONCURRENCY)

            async def limited(case: int) -> None:
                async with limiter:
                    await fuzz_one(chain.port, case, key, outcomes)

            with trio.fail_after(120):
                async with trio.open_nursery() as fuzzers:
                    for case in range(FUZZ_CASES):
                        fuzzers.start_soon(limited, case)
            assert outcomes.total() == FUZZ_CASES
            after = await windows.fds_back_to(baseline)
            print(f"\nfuzz outcomes: {dict(outcomes)}; Windows half fds {baseline} -> {after}")
            assert counting.accepted == 0
            assert after <= baseline

            # The control: the right answer to the same hello is accepted, and the
            # request after it reaches the LocalAPI through the counter.
            with trio.fail_after(30):
                assert await authenticated_status(chain.port, key) == 200
            assert counting.accepted == 1
            # Still serving: the real WSL2 half gets through the whole chain.
            chain.start_wsl_half()
            answer = await get(chain)
            assert answer.status == 200
            nursery.cancel_scope.cancel()
    finally:
        chain.stop_all()


# --- Slow and stuck peers ------------------------------------------------------------------

STUCK_PEERS = 500


async def test_stuck_peers_are_dropped_at_the_deadline(chain: Chain) -> None:
    windows = half(chain, "windows")
    assert (await get(chain)).status == 200
    baseline = await steady_fds(windows)
    lifetimes: list[float] = []
    greeted = 0
    all_greeted = trio.Event()

    async def stuck_peer() -> None:
        nonlocal greeted
        opened = trio.current_time()
        async with await trio.open_tcp_stream("127.0.0.1", chain.port) as stream:
            hello = await receive_hello(stream)
            greeted += 1
            if greeted == STUCK_PEERS:
                all_greeted.set()
            rest = await receive_until_closed(stream)  # and never send a byte
        lifetimes.append(trio.current_time() - opened)
        assert hello.startswith(MAGIC)
        assert rest == b""

    with trio.fail_after(HANDSHAKE_TIMEOUT + 60):
        async with trio.open_nursery() as nursery:
            for _ in range(STUCK_PEERS):
                nursery.start_soon(stuck_peer)
            await all_greeted.wait()
            started = trio.current_time()
            # Through the whole chain (the WSL2 half may use a link it opened before)...
            answer = await get(chain)
            # ...and on a link whose handshake happens in the middle of the storm.
            direct = await authenticated_status(chain.port, load_key(chain.key_file))
            took = trio.current_time() - started
            dropped_meanwhile = len(lifetimes)
    after = await windows.fds_back_to(baseline)
    print(
        f"\n{STUCK_PEERS} stuck peers: a request took {took:.3f}s meanwhile; "
        f"dropped after {min(lifetimes):.2f}..{max(lifetimes):.2f}s; "
        f"Windows half fds {baseline} -> {after}"
    )
    assert answer.status == 200
    assert direct == 200
    assert took < HANDSHAKE_TIMEOUT
    assert dropped_meanwhile == 0  # the request did not wait for the storm to pass
    assert len(lifetimes) == STUCK_PEERS
    assert min(lifetimes) >= HANDSHAKE_TIMEOUT - 0.5  # not before the deadline
    assert after <= baseline


DOWNLOAD_BYTES = 1 << 30
SLOW_READ = 128 * 1024
SLOW_PAUSE = 0.001
MAX_SLOW_PAUSE = 0.01


# Its own deadline is 300 s: the general limit would pre-empt it.
@pytest.mark.timeout(420)
async def test_slow_reader_keeps_memory_bounded(chain: Chain) -> None:
    halves = [half(chain, "wsl"), half(chain, "windows")]
    assert (await get(chain)).status == 200
    baseline = {h.name: h.rss() for h in halves}
    peak = dict(baseline)
    body = 0
    reads = backlogged = 0

    async def sample(cancel: trio.CancelScope) -> None:
        while not cancel.cancel_called:
            for h in halves:
                peak[h.name] = max(peak[h.name], h.rss())
            await trio.sleep(0.1)

    with trio.fail_after(300):
        async with await trio.open_unix_socket(str(chain.socket)) as stream:
            await stream.send_all(
                f"GET /standin/download?bytes={DOWNLOAD_BYTES} HTTP/1.1\r\n"
                "Host: x\r\nConnection: close\r\n\r\n".encode()
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sample, nursery.cancel_scope)
                received = b""
                while b"\r\n\r\n" not in received:
                    received += await stream.receive_some(4096)
                head, _, rest = received.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200 ")
                body = len(rest)
                pause = SLOW_PAUSE
                while True:
                    # Has the relay delivered ahead of this reader? If not, read slower:
                    # the reader must be the bottleneck, however fast the machine.
                    [waiting] = struct.unpack("i", fcntl.ioctl(stream.socket, FIONREAD, b"\0" * 4))
                    backlogged += waiting > 0
                    if not waiting:
                        pause = min(2 * pause, MAX_SLOW_PAUSE)
                    elif waiting >= SLOW_READ:
                        pause = max(pause / 2, SLOW_PAUSE)
                    if not (chunk := await stream.receive_some(SLOW_READ)):
                        break
                    body += len(chunk)
                    reads += 1
                    await trio.sleep(pause)
                nursery.cancel_scope.cancel()
    growth = {name: peak[name] - baseline[name] for name in baseline}
    print(
        f"\nslow reader: {body} bytes; {backlogged}/{reads} reads found data waiting; "
        f"RSS baseline {baseline}, growth {growth}"
    )
    assert body == DOWNLOAD_BYTES
    # The reader was the bottleneck: data was waiting for it nearly every time,
    # so the relay was held back, and a half buffering what it could not deliver
    # would have shown in its memory.
    assert backlogged > reads * 0.9
    for name, grown in growth.items():
        assert grown < 20 * MiB, f"the {name} half grew by {grown / MiB:.1f} MiB"


# --- Load ----------------------------------------------------------------------------------

HELD_CONNECTIONS = 1000
OPENING_CONCURRENCY = 100
# The WSL2 half's parked warm links (warm.py, four) are closed and reopened as
# they are used, so its count may differ by that much from one moment to the next.
FD_SLACK = 8


async def hold_connections(chain: Chain, halves: list[Half]) -> dict[str, int]:
    """Open HELD_CONNECTIONS through both halves, hold them all, then close them.

    Each connection gets an answer (so it reached the LocalAPI) and stays open;
    once all are open at once, each asks again and closes. The descriptor
    counts of the halves at the peak are returned.
    """
    opened = 0
    all_open = trio.Event()
    served: list[int] = []
    limiter = trio.CapacityLimiter(OPENING_CONCURRENCY)

    async def client() -> None:
        nonlocal opened
        async with limiter:
            stream = await trio.open_unix_socket(str(chain.socket))
            reader = Reader(stream)
            await stream.send_all(KEEP_ALIVE_STATUS)
            served.append(await read_response(reader))
        async with stream:
            opened += 1
            await all_open.wait()
            await stream.send_all(CLOSING_STATUS)
            served.append(await read_response(reader))
            assert await stream.receive_some(1) == b""

    peak: dict[str, int] = {}
    with trio.fail_after(180):
        async with trio.open_nursery() as nursery:
            for _ in range(HELD_CONNECTIONS):
                nursery.start_soon(client)
            # Measure before releasing anyone: a released client closes its connection
            # at once, and the relay now frees it fast enough to be missed here.
            while opened < HELD_CONNECTIONS:
                await trio.sleep(0.01)
            peak = {h.name: h.fds() for h in halves}
            all_open.set()
    assert served == [200] * (2 * HELD_CONNECTIONS)
    return peak


# Its own deadline is 180 s: the general limit would pre-empt it.
@pytest.mark.timeout(300)
async def test_a_thousand_connections_held_at_once_leak_nothing(chain: Chain) -> None:
    halves = [half(chain, "wsl"), half(chain, "windows")]
    assert (await get(chain)).status == 200
    baseline = {h.name: await steady_fds(h) for h in halves}
    # The second round must come back to where the first left off.
    limits = {name: count + FD_SLACK for name, count in baseline.items()}
    rounds = []
    for _ in range(2):
        peak = await hold_connections(chain, halves)
        for h in halves:
            await h.fds_back_to(limits[h.name])
        after = {h.name: await steady_fds(h) for h in halves}
        rss = {h.name: h.rss() for h in halves}
        rounds.append((peak, after, rss))
        limits = after
    print(f"\nfd baseline {baseline}")
    for index, (peak, after, rss) in enumerate(rounds, 1):
        print(f"round {index}: fds at peak {peak}, after {after}; RSS {rss}")
    (peak1, after1, rss1), (peak2, after2, rss2) = rounds
    for name, count in baseline.items():
        # Each held connection is a client socket and an upstream socket in each
        # half (less the WSL2 half's parked links, which become upstream sockets).
        assert peak1[name] >= count + 2 * HELD_CONNECTIONS - FD_SLACK, name
        assert peak2[name] >= count + 2 * HELD_CONNECTIONS - FD_SLACK, name
        assert after1[name] <= count + FD_SLACK, name
        assert after2[name] <= after1[name], name
        grown = rss2[name] - rss1[name]
        assert grown < 8 * MiB, f"the {name} half grew by {grown / MiB:.1f} MiB in round 2"


# --- Faults --------------------------------------------------------------------------------


async def open_watch(chain: Chain) -> tuple[trio.SocketStream, bytes]:
    """A `watch-ipn-bus` stream through the chain, with its first messages read."""
    stream = await trio.open_unix_socket(str(chain.socket))
    await stream.send_all(b"GET /localapi/v0/watch-ipn-bus?mask=0 HTTP/1.1\r\nHost: x\r\n\r\n")
    received = b""
    while b'"Seq": 1,' not in received:
        chunk = await stream.receive_some(65536)
        assert chunk, f"the stream ended early: {received!r}"
        received += chunk
    return stream, received


async def test_upstream_killed_mid_stream(chain: Chain) -> None:
    with trio.fail_after(60):
        stream, received = await open_watch(chain)
        async with stream:
            assert received.startswith(b"HTTP/1.1 200 ")
            chain.processes.pop("localapi").stop(signal.SIGKILL)
            await receive_until_closed(stream)  # returns: the client sees the end
        chain.start_localapi()
        assert (await get(chain)).status == 200


async def test_windows_half_restarted_under_a_running_wsl_half(chain: Chain) -> None:
    wsl = chain.processes["wsl"]
    with trio.fail_after(60):
        stream, _ = await open_watch(chain)
        async with stream:
            assert await stop(chain, "windows") == 0
            await receive_until_closed(stream)
        assert (await get(chain)).status == 502
        chain.start_windows_half()
        assert (await get(chain)).status == 200
    assert wsl.popen.poll() is None
    assert chain.processes["wsl"] is wsl


# Two deadlines of 120 s each: the general limit would pre-empt them.
@pytest.mark.timeout(360)
async def test_localapi_restarted_leaves_nothing_behind(chain: Chain) -> None:
    halves = [half(chain, "wsl"), half(chain, "windows")]
    assert (await get(chain)).status == 200
    baseline = {h.name: await steady_fds(h) for h in halves}
    with trio.fail_after(120):
        for _ in range(3):
            await stop(chain, "localapi")
            assert (await get(chain)).status == 502
            chain.start_localapi()
            assert (await get(chain)).status == 200
    after = {h.name: await h.fds_back_to(baseline[h.name]) for h in halves}
    print(f"\nfds across three LocalAPI restarts: {baseline} -> {after}")
    for name, count in baseline.items():
        assert after[name] <= count, name


ACTIVE_TRANSFERS = 100


async def sigterm_during_transfers(chain: Chain, name: str) -> tuple[int, int]:
    """Stop half `name` while ACTIVE_TRANSFERS streams flow; its exit status, streams ended."""
    streaming = 0
    all_streaming = trio.Event()
    finished = 0

    async def transfer() -> None:
        nonlocal streaming, finished
        stream, _ = await open_watch(chain)
        async with stream:
            streaming += 1
            if streaming == ACTIVE_TRANSFERS:
                all_streaming.set()
            await receive_until_closed(stream)  # keeps reading until the relay ends it
        finished += 1

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for _ in range(ACTIVE_TRANSFERS):
                nursery.start_soon(transfer)
            await all_streaming.wait()
            status = await stop(chain, name)
    return status, finished


async def test_sigterm_during_active_transfers(chain: Chain) -> None:
    status, finished = await sigterm_during_transfers(chain, "windows")
    assert (status, finished) == (0, ACTIVE_TRANSFERS)
    chain.start_windows_half()
    status, finished = await sigterm_during_transfers(chain, "wsl")
    assert (status, finished) == (0, ACTIVE_TRANSFERS)
    assert not chain.socket.exists()
