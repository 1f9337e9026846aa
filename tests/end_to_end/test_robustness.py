"""Robustness of the whole chain, proven on loopback and bounded in count and time.

Every test runs the real subprocess chain (LocalAPI stand-in <- Windows half <-
WSL2 half), once with the package and once with the frozen binary, and checks
what the halves cost the system from /proc (`procstats.py`):

- bad input: thousands of random and malformed handshakes reach nothing, and
  are logged once per reason, not once per connection;
- floods and slow peers: a fresh WSL2 half gets through while thousands of
  connections that never handshake are held open, and a slow reader cannot
  make a half buffer the download in memory;
- load: a thousand connections held open through both halves at once, twice,
  leave no descriptor or memory behind;
- faults: an upstream killed mid-stream, either hop restarted, SIGTERM with
  transfers in flight.

No assertion depends on the machine's speed: waits are generous and bounded,
and no timing is asserted (the flood test prints how long the user waited).
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
    KEY_EXPECTED,
    KEY_REFUSED,
    LINK_PREFIX,
    LINK_PROLOGUE,
    MESSAGE_1_SIZE,
    MESSAGE_2_SIZE,
)
from tailscale_wsl2.link.key import load_key
from tailscale_wsl2.link.noise import TAG_SIZE, Initiator
from tailscale_wsl2.tuning.open_files import raise_open_file_limit
from tests.support.chain import (
    FROZEN_BINARY,
    Chain,
    connectable,
    running_chain,
    start_process,
    wait_for_process,
)
from tests.support.counting_upstream import CountingUpstream
from tests.support.http_client import Answer, request
from tests.support.link_middle import sealed_status
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


FUZZ_CASES = 10_000
FUZZ_CONCURRENCY = 48  # within the handshake budget (relay/pending.py): every one is judged


def first_message(key: bytes) -> bytes:
    """A first message of the WSL2 half's, as it would make one with `key`."""
    return LINK_PREFIX + Initiator(key, prologue=LINK_PROLOGUE).write_message_1()


def bad_handshake(kind: int, rng: random.Random, key: bytes) -> tuple[bytes, bool]:
    """Bytes that are not a whole, right handshake, of the given kind; and whether they
    start with a first message made with the right key (which only a replay could give
    an attacker: the Windows half answers it, and admits nothing without a confirmation)."""
    right = first_message(key)
    mask = bytes(rng.randrange(1, 256) if i == 10 else rng.randrange(256) for i in range(54))
    kinds: list[Callable[[], tuple[bytes, bool]]] = [
        lambda: (b"", False),  # nothing
        lambda: (rng.randbytes(rng.randrange(1, len(right))), False),  # truncated noise
        lambda: (LINK_PREFIX + rng.randbytes(MESSAGE_1_SIZE), False),  # the prefix, then noise
        lambda: (first_message(rng.randbytes(32)), False),  # another key
        lambda: (b"TSWSL\x03" + right[6:], False),  # another version
        lambda: (right[: rng.randrange(1, len(right))], False),  # the right message, cut short
        lambda: (b"\x00" + rng.randbytes(40), False),  # a cleartext (insecure) WSL2 half
        lambda: (b"GET /localapi/v0/status HTTP/1.1\r\nHost: x\r\n\r\n", False),  # HTTP
        lambda: (b"\x01" + rng.randbytes(32), False),  # a first-version answer
        lambda: (bytes(a ^ b for a, b in zip(right, mask, strict=True)), False),  # bit flips
        lambda: (right + rng.randbytes(TAG_SIZE), True),  # a confirmation that is made up
        lambda: (right, True),  # no confirmation at all
        lambda: (right + rng.randbytes(rng.randrange(TAG_SIZE + 1, 4096)), True),  # more noise
    ]
    return kinds[kind % len(kinds)]()


async def fuzz_one(port: int, case: int, key: bytes, outcomes: Counter[str]) -> None:
    """One malformed handshake, its shape drawn from `case` (reproducible)."""
    rng = random.Random(case)
    style = rng.choice(["close", "reset", "send", "dribble"])
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        if style == "close":  # connect and leave
            outcomes[style] += 1
            return
        if style == "reset":  # connect and reset
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            outcomes[style] += 1
            return
        data, answerable = bad_handshake(rng.randrange(1 << 16), rng, key)
        try:
            if style == "dribble":  # a few bytes at a time
                for start in range(0, len(data), 7):
                    await stream.send_all(data[start : start + 7])
            else:
                await stream.send_all(data)
            await stream.send_eof()  # a short one must not wait for the deadline
        except trio.BrokenResourceError:
            outcomes[f"{style}: reset while sending"] += 1
            return
        reply = await receive_until_closed(stream)
    # The verdict: a refusal (to a start that is no link handshake, the one fixed answer
    # that says a handshake is expected), or (to a first message made with the key)
    # message 2, and then the connection closing; nothing else, ever.
    allowed = {b"", KEY_REFUSED, KEY_EXPECTED}
    assert reply in allowed or (answerable and len(reply) == MESSAGE_2_SIZE), (
        f"case {case}: after a bad handshake the Windows half sent {reply!r}"
    )
    outcomes[style] += 1


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

            # The control: a right handshake is admitted, and the request after it reaches
            # the LocalAPI through the counter.
            with trio.fail_after(30):
                assert await sealed_status(chain.port, key) == 200
            assert counting.accepted == 1
            # Still serving: the real WSL2 half gets through the whole chain.
            chain.start_wsl_half()
            answer = await get(chain)
            assert answer.status == 200
            nursery.cancel_scope.cancel()
        log_lines = chain.processes["windows"].output().count("refused")
        print(f"Windows half log: {log_lines} lines about {FUZZ_CASES} refusals")
        # Each reason once per interval and the rest counted, not a line per connection.
        assert log_lines < FUZZ_CASES // 100
    finally:
        chain.stop_all()


# --- Floods, slow and stuck peers --------------------------------------------------------------

FLOOD_HOLDERS = 4000  # connections an attacker keeps open at once, never handshaking


async def test_a_user_gets_through_a_flood_of_half_open_connections(chain: Chain) -> None:
    windows = half(chain, "windows")
    assert (await get(chain)).status == 200
    baseline = await steady_fds(windows)
    await stop(chain, "wsl")  # the fresh WSL2 half makes its links during the flood
    attempts = 0
    holding = 0
    flooding = trio.Event()

    async def hold_one_open(stop_flood: trio.CancelScope) -> None:
        nonlocal attempts, holding
        while not stop_flood.cancel_called:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", chain.port)
            except OSError:
                await trio.sleep(0.01)
                continue
            attempts += 1
            holding += 1
            if holding >= FLOOD_HOLDERS:
                flooding.set()
            async with stream:
                await receive_until_closed(stream)  # until the Windows half drops it
            holding -= 1

    with trio.fail_after(180):
        async with trio.open_nursery() as attacker:
            for _ in range(FLOOD_HOLDERS):
                attacker.start_soon(hold_one_open, attacker.cancel_scope)
            with trio.move_on_after(30):
                await flooding.wait()
            started = trio.current_time()
            await trio.to_thread.run_sync(chain.start_wsl_half)
            answer = await get(chain)  # needs a link made during the flood
            took = trio.current_time() - started
            attempts_meanwhile = attempts
            attacker.cancel_scope.cancel()
    after = await windows.fds_back_to(baseline)
    print(
        f"\nflood of {FLOOD_HOLDERS} half-open connections held ({attempts_meanwhile} opened): "
        f"a fresh WSL2 half started and answered in {took:.2f}s; "
        f"Windows half fds {baseline} -> {after}"
    )
    assert answer.status == 200
    assert after <= baseline
    windows_log = chain.processes["windows"].output()
    refusals = windows_log.count("refused a connection")
    assert refusals < 10, windows_log[-2000:]  # counted, not logged one by one


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
