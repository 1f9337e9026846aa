# The relay benchmark: this tool's two-half chain against a socat chain of the
# same shape, measured in one run against one upstream.
#
# Method. A LocalAPI stand-in written in C (bench/upstream.c) serves HTTP/1.1
# on a Unix socket. Each chain is "client -> WSL2 half (Unix socket) -> TCP
# 127.0.0.1 -> Windows half -> upstream (Unix socket)"; socat's chain is two
# forking socat listeners wired the same way. A load generator written in C
# (bench/loadgen.c) drives, in turn, the upstream directly (the floor every
# relayed figure is compared with), the tool's chain and the socat chain:
#
#   latency   sequential requests, each on a new connection (connect, GET a
#             small answer, read it by Content-Length, close); "added"
#             latency is the relayed figure minus the direct one
#   upload    one PUT with a large body the upstream counts; download: one GET
#             of a large body; MB/s with MB = 10^6 bytes
#   rate      many concurrent clients, each opening a new connection per
#             request, for a fixed time; requests/s and p99 latency
#   idle      memory with no traffic, and holding many idle connections
#
# While the relays work, a sampler thread walks each half's process tree
# (/proc/PID/task/*/children, so socat's per-connection forks count) and keeps
# the highest total RSS and PSS; during the latency phase another notes how
# often the two halves were last seen on one core. CPU time is utime+stime of
# every process in the tree plus cutime+cstime (forks socat has already
# reaped), read before and after each phase. Both client and upstream are C
# with blocking sockets and no per-request allocation, because on a 2-core
# machine anything slower (a Python client, say) would share the CPU with the
# relays and measure itself; the direct figures show how far above the relays
# they are.
#
# Each table row is data: a label, the figure it shows, and the bar it is held
# to (`ROWS`); the bars planned for later are `LATER_BARS`, chosen with
# `--bars later`. A chain variant is one more `ChainSpec`: `--compare-auth`
# adds the tool with --insecure-no-auth (the default chain authenticates,
# with a link key file in the run's work directory).

"""Benchmark the relay chain against a socat chain of the same shape."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
BUILD = BENCH / ".build"
FROZEN_BINARY = ROOT / "dist" / "tailscale-wsl2"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MB = 1_000_000
GB = 1_000_000_000
START_TIMEOUT = 20.0
SAMPLE_INTERVAL = 0.1
# About a hundred samples in a chain's latency phase (about a second); a sample
# costs 130-170 us of CPU (measured), so sampling takes about 1.5 % of a core.
CORE_SAMPLE_INTERVAL = 0.01
SOCAT_BUFFER = 262144

Figures = dict[str, float]


# --- what to run ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    latency_requests: int
    upload_bytes: int
    download_bytes: int
    rate_clients: int
    rate_seconds: float
    idle_connections: int
    version_runs: int
    transfer_runs: int  # each transfer is repeated; its figure is the median


FULL = Sizes(2000, 1 << 30, 512 << 20, 200, 5.0, 1000, 20, 3)
QUICK = Sizes(300, 64 << 20, 32 << 20, 200, 1.5, 1000, 5, 1)


# --- the table: rows as data -----------------------------------------------------------------

Op = Literal["<=", ">="]


@dataclass(frozen=True)
class Report:
    """No bar: the figure is reported only."""

    def describe(self) -> str:
        return "report"

    def verdict(self, tool: float | None, socat: float | None) -> str:
        return "-"


@dataclass(frozen=True)
class Relative:
    """The tool's figure against `factor` times socat's."""

    op: Op
    factor: float = 1.0

    def describe(self) -> str:
        return f"{self.op} {self.factor:g}x socat"

    def verdict(self, tool: float | None, socat: float | None) -> str:
        if tool is None or socat is None:
            return "n/a"
        return "met" if _holds(tool, self.op, self.factor * socat) else "MISSED"


@dataclass(frozen=True)
class Absolute:
    """The tool's figure against a fixed limit, in the row's unit."""

    op: Op
    limit: float

    def describe(self) -> str:
        return f"{self.op} {self.limit:g}"

    def verdict(self, tool: float | None, socat: float | None) -> str:
        if tool is None:
            return "n/a"
        return "met" if _holds(tool, self.op, self.limit) else "MISSED"


Bar = Report | Relative | Absolute


def _holds(value: float, op: Op, limit: float) -> bool:
    return value <= limit if op == "<=" else value >= limit


@dataclass(frozen=True)
class Row:
    label: str
    unit: str
    key: str  # the figure's name in each column's Figures
    bar: Bar
    direct: bool = False  # the direct-to-upstream column has this figure
    digits: int = 0
    socat_key: str = ""  # socat's figure to compare with, when not `key`


ROWS: tuple[Row, ...] = (
    Row("new-conn request latency p50", "us", "latency_p50_us", Report(), direct=True),
    Row("  added latency p50", "us", "added_p50_us", Relative("<=")),
    Row("new-conn request latency p99", "us", "latency_p99_us", Report(), direct=True),
    Row("  added latency p99", "us", "added_p99_us", Relative("<=")),
    Row("  halves last seen on one core", "%", "latency_same_core_pct", Report()),
    Row(
        "  added latency p50, no auth",
        "us",
        "noauth_added_p50_us",
        Report(),
        socat_key="added_p50_us",
    ),
    Row(
        "  added latency p99, no auth",
        "us",
        "noauth_added_p99_us",
        Report(),
        socat_key="added_p99_us",
    ),
    Row("  what authentication adds, p50", "us", "noauth_auth_cost_p50_us", Absolute("<=", 200)),
    Row("upload throughput", "MB/s", "upload_mb_s", Relative(">="), direct=True),
    Row("  upload, no auth", "MB/s", "noauth_upload_mb_s", Report(), socat_key="upload_mb_s"),
    Row("download throughput", "MB/s", "download_mb_s", Relative(">="), direct=True),
    Row("  download, no auth", "MB/s", "noauth_download_mb_s", Report(), socat_key="download_mb_s"),
    Row("concurrent clients: request rate", "req/s", "rate_req_s", Relative(">="), direct=True),
    Row("  request rate, no auth", "req/s", "noauth_rate_req_s", Report(), socat_key="rate_req_s"),
    Row(
        "concurrent clients: latency p99",
        "ms",
        "rate_p99_ms",
        Relative("<="),
        direct=True,
        digits=1,
    ),
    Row("failed requests (latency + concurrent)", "", "failed_requests", Report(), direct=True),
    Row(
        "CPU per GB uploaded (both halves)", "s/GB", "cpu_s_per_gb_upload", Relative("<="), digits=2
    ),
    Row(
        "  CPU per GB up, no auth",
        "s/GB",
        "noauth_cpu_s_per_gb_upload",
        Report(),
        digits=2,
        socat_key="cpu_s_per_gb_upload",
    ),
    Row(
        "CPU per GB downloaded (both halves)",
        "s/GB",
        "cpu_s_per_gb_download",
        Relative("<="),
        digits=2,
    ),
    Row(
        "  CPU per GB down, no auth",
        "s/GB",
        "noauth_cpu_s_per_gb_download",
        Report(),
        digits=2,
        socat_key="cpu_s_per_gb_download",
    ),
    Row("CPU per request, concurrent (both)", "us", "cpu_us_per_request", Report()),
    Row("peak RSS under load, WSL2 half", "MB", "peak_rss_mb_wsl", Report(), digits=1),
    Row("peak RSS under load, Windows half", "MB", "peak_rss_mb_windows", Report(), digits=1),
    Row("peak PSS under load, both halves", "MB", "peak_pss_mb_total", Report(), digits=1),
    Row("idle RSS, WSL2 half", "MB", "idle_rss_mb_wsl", Report(), digits=1),
    Row("idle RSS, Windows half", "MB", "idle_rss_mb_windows", Report(), digits=1),
    Row("RSS holding idle conns, WSL2 half", "MB", "hold_rss_mb_wsl", Report(), digits=1),
    Row("RSS holding idle conns, Windows half", "MB", "hold_rss_mb_windows", Report(), digits=1),
    Row("PSS holding idle conns, both halves", "MB", "hold_pss_mb_total", Report(), digits=1),
    Row("--version start to first line (median)", "s", "version_s", Report(), digits=3),
    Row("frozen binary: --version (median)", "s", "frozen_version_s", Report(), digits=3),
    Row("frozen binary: size", "MB", "frozen_size_mb", Report(), digits=1),
)

# The targets after the current "no worse than socat" bar; `--bars later`.
LATER_BARS: dict[str, Bar] = {
    "added_p50_us": Relative("<=", 0.5),
    "added_p99_us": Relative("<=", 0.5),
    "rate_req_s": Relative(">=", 3.0),
    "rate_p99_ms": Relative("<=", 0.5),
    "idle_rss_mb_wsl": Absolute("<=", 30),
    "idle_rss_mb_windows": Absolute("<=", 30),
    "hold_rss_mb_wsl": Absolute("<=", 60),
    "hold_rss_mb_windows": Absolute("<=", 60),
    "frozen_version_s": Absolute("<=", 0.5),
    "frozen_size_mb": Absolute("<=", 20),
}


def rows_for(bars: str) -> list[Row]:
    if bars == "current":
        return list(ROWS)
    return [dataclasses.replace(row, bar=LATER_BARS.get(row.key, row.bar)) for row in ROWS]


# --- building the C programs -----------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Where each side's processes run: a command prefix for each side.

    By default (no prefix) wherever the scheduler puts them. `--pin-sides` puts
    them as real use does, where the two sides are two machines: the WSL2 side
    (the client, and the WSL2 half or socat's Unix listener) on core 1, the
    Windows side (the Windows half or socat's TCP listener, and the upstream)
    on core 0. Both chains get the same placement.
    """

    wsl: tuple[str, ...] = ()
    windows: tuple[str, ...] = ()
    description: str = "wherever the scheduler puts them"

    def on_wsl_side(self, argv: Sequence[str]) -> list[str]:
        return [*self.wsl, *argv]

    def on_windows_side(self, argv: Sequence[str]) -> list[str]:
        return [*self.windows, *argv]


SIDES_ON_CORES = Placement(
    ("taskset", "-c", "1"),
    ("taskset", "-c", "0"),
    "WSL2 side (client, WSL2 half or socat UNIX-LISTEN) on core 1, Windows side "
    "(Windows half or socat TCP-LISTEN, upstream) on core 0 (--pin-sides)",
)


@dataclass(frozen=True)
class Tools:
    upstream: Path
    loadgen: Path
    placement: Placement


def chosen_placement(parser: argparse.ArgumentParser, pin_sides: bool) -> Placement:
    """The placement the command line asks for; --pin-sides needs two cores and taskset."""
    if not pin_sides:
        return Placement()
    if len(os.sched_getaffinity(0)) < 2 or not shutil.which("taskset"):
        parser.error("--pin-sides needs two cores and taskset (util-linux)")
    return SIDES_ON_CORES


def build_tools(placement: Placement) -> Tools:
    BUILD.mkdir(exist_ok=True)
    built = []
    for name in ("upstream", "loadgen"):
        source, binary = BENCH / f"{name}.c", BUILD / name
        newest_input = max(source.stat().st_mtime, (BENCH / "io.h").stat().st_mtime)
        if not binary.exists() or binary.stat().st_mtime < newest_input:
            subprocess.run(
                ["gcc", "-O2", "-Wall", "-Wextra", "-pthread", "-o", str(binary), str(source)],
                check=True,
            )
        built.append(binary)
    upstream, load_generator = built
    return Tools(upstream, load_generator, placement)


# --- processes ---------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self) -> str:
        with suppress(OSError):
            return self.log.read_text(errors="replace")[-2000:]
        return ""


def start(name: str, argv: Sequence[str], workdir: Path) -> Proc:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,  # its own process group: stop() reaches socat's forks
        )
    return Proc(name, popen, log)


def stop(proc: Proc) -> None:
    """SIGTERM the process group, then SIGKILL it if it lingers."""
    pgid = proc.popen.pid
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    try:
        proc.popen.wait(10)
    except subprocess.TimeoutExpired:
        print(f"warning: {proc.name} ignored SIGTERM; killing it", file=sys.stderr)
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        proc.popen.wait(5)


@contextmanager
def running(name: str, argv: Sequence[str], workdir: Path) -> Iterator[Proc]:
    proc = start(name, argv, workdir)
    try:
        yield proc
    finally:
        stop(proc)


@contextmanager
def upstream_serving(tools: Tools, prefix: str) -> Iterator[tuple[Path, Path]]:
    """A temporary work directory with the C upstream serving in it: (directory, socket)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        workdir = Path(tmp)
        upstream_sock = workdir / "upstream.sock"
        upstream_argv = tools.placement.on_windows_side([str(tools.upstream), str(upstream_sock)])
        with running("upstream", upstream_argv, workdir) as upstream:
            wait_ready(upstream, str(upstream_sock))
            yield workdir, upstream_sock


def connectable(address: str | tuple[str, int]) -> bool:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(address)
        except OSError:
            return False
        return True


def wait_ready(proc: Proc, address: str | tuple[str, int], timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not connectable(address):
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited early:\n{proc.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.name} not ready after {timeout}s:\n{proc.tail()}")
        time.sleep(0.02)


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# --- /proc: process trees, CPU, memory -----------------------------------------------------


def tree(root: int) -> list[int]:
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        with suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as children:
                    todo.extend(int(child) for child in children.read().split())
    return pids


def cpu_times(root: int) -> tuple[float, float]:
    """(user, system) CPU seconds of the tree, children already reaped included."""
    user = system = 0
    for pid in tree(root):
        with suppress(OSError), open(f"/proc/{pid}/stat") as stat:
            utime, stime, cutime, cstime = map(int, stat.read().rsplit(")", 1)[1].split()[11:15])
            user += utime + cutime
            system += stime + cstime
    return user / CLK_TCK, system / CLK_TCK


def cpu_seconds(root: int) -> float:
    """utime+stime of the tree, plus cutime+cstime: children already reaped."""
    return sum(cpu_times(root))


def memory(root: int) -> tuple[int, int]:
    """(RSS, PSS) of the whole tree, in bytes."""
    rss = pss = 0
    for pid in tree(root):
        with suppress(OSError), open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
                    break
    return rss, pss


def last_core(root: int) -> int | None:
    """The core that the newest process of the tree last ran on: the relay itself
    (a frozen binary's child; socat's fork for the connection in hand)."""
    with suppress(OSError), open(f"/proc/{tree(root)[-1]}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[36])  # field 39, "processor"
    return None


class SameCoreSampler:
    """The share of samples in which a chain's two halves were last seen on one core.

    On this machine that decides much of a request's latency (bench/NOTEBOOK.md,
    "Latency"): in real use the halves are on two machines and never share one.
    """

    def __init__(self, chain: RunningChain | None) -> None:
        self._roots = list(chain.roots().values()) if chain else []
        self._samples = self._same = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def percent(self) -> float | None:
        return 100 * self._same / self._samples if self._samples else None

    def _run(self) -> None:
        while not self._stop.wait(CORE_SAMPLE_INTERVAL):
            cores = {last_core(root) for root in self._roots}
            if None not in cores:
                self._samples += 1
                self._same += len(cores) == 1

    def __enter__(self) -> SameCoreSampler:
        if self._roots:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._roots:
            self._thread.join()


def high_water_mark(pid: int) -> int:
    """The kernel's own peak RSS (VmHWM) of one process, in bytes."""
    with suppress(OSError), open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakSampler:
    """Keeps each half's highest RSS, and each chain's highest total PSS, while running."""

    def __init__(self, chains: dict[str, RunningChain]) -> None:
        self.roots = {name: chain.roots() for name, chain in chains.items()}
        self.peak_rss = {name: dict.fromkeys(roots, 0) for name, roots in self.roots.items()}
        self.peak_pss = dict.fromkeys(self.roots, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for name, roots in self.roots.items():
            pss_total = 0
            for half, root in roots.items():
                rss, pss = memory(root)
                self.peak_rss[name][half] = max(self.peak_rss[name][half], rss)
                pss_total += pss
            self.peak_pss[name] = max(self.peak_pss[name], pss_total)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            self._sample()

    def __enter__(self) -> PeakSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


# --- the load generator ----------------------------------------------------------------------


def loadgen(tools: Tools, mode: str, sock: Path, *args: object) -> dict[str, Any]:
    argv = tools.placement.on_wsl_side([str(tools.loadgen), mode, str(sock), *map(str, args)])
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    if not done.stdout.strip():
        raise RuntimeError(f"loadgen {mode} printed nothing: {done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    if done.returncode != 0 or result.get("errors") or result.get("ok") is False:
        print(f"warning: loadgen {mode} via {sock.name}: {result} {done.stderr}", file=sys.stderr)
    return result


def upstream_open(upstream_sock: Path) -> int:
    """Connections the upstream holds right now, not counting this question."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(str(upstream_sock))
        conn.sendall(b"GET /stats HTTP/1.1\r\nHost: bench\r\n\r\n")
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
    return int(json.loads(answer.split(b"\r\n\r\n", 1)[1])["open"]) - 1


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


# --- chains ------------------------------------------------------------------------------------


@dataclass
class RunningChain:
    front: Path  # the Unix socket clients connect to
    halves: dict[str, Proc] = field(default_factory=dict)  # "wsl", "windows"
    baseline: dict[str, int] = field(default_factory=dict)  # processes per half when idle

    def roots(self) -> dict[str, int]:
        return {name: proc.popen.pid for name, proc in self.halves.items()}

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.roots().values())

    def count_processes(self) -> dict[str, int]:
        return {name: len(tree(pid)) for name, pid in self.roots().items()}

    def settled(self) -> bool:
        """No more processes than at start (socat's forks, for one, have ended).

        The baseline is not 1: a one-file PyInstaller binary runs as a
        bootloader process and its child."""
        return all(n <= self.baseline[name] for name, n in self.count_processes().items())

    def check_alive(self) -> None:
        for proc in self.halves.values():
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} died:\n{proc.tail()}")


@dataclass(frozen=True)
class ChainSpec:
    """How to start one chain: argv of the Windows half and of the WSL2 half."""

    name: str
    windows_argv: Callable[[int, Path], list[str]]  # (port, upstream socket)
    wsl_argv: Callable[[int, Path], list[str]]  # (port, front socket)

    @contextmanager
    def run(
        self,
        workdir: Path,
        upstream_sock: Path,
        placement: Placement,
        start_timeout: float = START_TIMEOUT,
    ) -> Iterator[RunningChain]:
        port = free_tcp_port()
        front = workdir / f"{self.name}-front.sock"
        chain = RunningChain(front)
        with ExitStack() as stack:
            windows_argv = placement.on_windows_side(self.windows_argv(port, upstream_sock))
            windows = stack.enter_context(running(f"{self.name}-windows", windows_argv, workdir))
            chain.halves["windows"] = windows
            wait_ready(windows, ("127.0.0.1", port), start_timeout)
            wsl_argv = placement.on_wsl_side(self.wsl_argv(port, front))
            wsl = stack.enter_context(running(f"{self.name}-wsl", wsl_argv, workdir))
            chain.halves["wsl"] = wsl
            wait_ready(wsl, str(front), start_timeout)
            yield chain


def tool_chain(program: Sequence[str], *, name: str = "tool", auth: bool = True) -> ChainSpec:
    """The tool's halves; with `auth`, the link handshake with a key file in the work dir."""

    def auth_args(workdir: Path) -> list[str]:
        if not auth:
            return ["--insecure-no-auth"]
        return ["--key-file", str(workdir / f"{name}-link.key")]  # the Windows half creates it

    def windows(port: int, upstream: Path) -> list[str]:
        return [*program, "up", "--side", "windows", "--listen", "127.0.0.1",
                "--port", str(port), "--upstream", f"unix:{upstream}",
                *auth_args(upstream.parent)]  # fmt: skip

    def wsl(port: int, front: Path) -> list[str]:
        return [*program, "up", "--side", "wsl", "--host-ip", "127.0.0.1",
                "--port", str(port), "--socket", str(front), *auth_args(front.parent)]  # fmt: skip

    return ChainSpec(name, windows, wsl)


def socat_chain() -> ChainSpec:
    def windows(port: int, upstream: Path) -> list[str]:
        return ["socat", "-b", str(SOCAT_BUFFER),
                f"TCP-LISTEN:{port},fork,reuseaddr,backlog=4096,bind=127.0.0.1",
                f"UNIX-CONNECT:{upstream}"]  # fmt: skip

    def wsl(port: int, front: Path) -> list[str]:
        return ["socat", "-b", str(SOCAT_BUFFER),
                f"UNIX-LISTEN:{front},fork,backlog=4096", f"TCP:127.0.0.1:{port}"]  # fmt: skip

    return ChainSpec("socat", windows, wsl)


# --- measuring ---------------------------------------------------------------------------------


@dataclass
class Target:
    """Where the load generator connects: the upstream itself, or a chain's front."""

    name: str  # the table column
    sock: Path
    chain: RunningChain | None = None
    figures: Figures = field(default_factory=dict)

    def phase(self, tools: Tools, mode: str, *args: object) -> tuple[dict[str, Any], float]:
        """Run the load generator once; also return the CPU seconds the chain used."""
        chain = self.chain
        before = chain.cpu() if chain else 0.0
        result = loadgen(tools, mode, self.sock, *args)
        if chain is None:
            return result, 0.0
        chain.check_alive()
        # socat's forks finish (and are reaped into cutime) just after the client.
        wait_for(chain.settled, 10, "per-connection processes to end")
        return result, chain.cpu() - before


def measure_traffic(tools: Tools, targets: Sequence[Target], sizes: Sizes) -> None:
    """Latency, transfers and the concurrent rate; within each phase the targets
    take turns, so that a slow spell on a shared machine hits all of them alike."""
    for target in targets:
        with SameCoreSampler(target.chain) as same_core:
            latency, _ = target.phase(tools, "latency", sizes.latency_requests)
        if (percent := same_core.percent) is not None:
            target.figures["latency_same_core_pct"] = percent
        target.figures["latency_p50_us"] = latency["p50_us"]
        target.figures["latency_p99_us"] = latency["p99_us"]
        target.figures["failed_requests"] = latency["errors"]

    for mode, size in (("upload", sizes.upload_bytes), ("download", sizes.download_bytes)):
        speeds: dict[str, list[float]] = {target.name: [] for target in targets}
        cpu_total = dict.fromkeys(speeds, 0.0)
        for _ in range(sizes.transfer_runs):
            for target in targets:
                transfer, cpu = target.phase(tools, mode, size)
                speeds[target.name].append(transfer["mb_per_s"])
                cpu_total[target.name] += cpu
        for target in targets:
            target.figures[f"{mode}_mb_s"] = statistics.median(speeds[target.name])
            if target.chain:
                gigabytes = size * sizes.transfer_runs / GB
                target.figures[f"cpu_s_per_gb_{mode}"] = cpu_total[target.name] / gigabytes

    for target in targets:
        rate, cpu = target.phase(tools, "rate", sizes.rate_clients, sizes.rate_seconds)
        target.figures["rate_req_s"] = rate["rate"]
        target.figures["rate_p99_ms"] = rate["p99_us"] / 1000
        target.figures["failed_requests"] += rate["errors"]
        if target.chain:
            target.figures["cpu_us_per_request"] = cpu / max(rate["requests"], 1) * 1e6


def measure_chains(
    specs: dict[str, ChainSpec], tools: Tools, upstream_sock: Path, sizes: Sizes, workdir: Path
) -> dict[str, Figures]:
    """Run every chain side by side and measure each, and the upstream directly."""
    with ExitStack() as stack:
        chains = {
            name: stack.enter_context(spec.run(workdir, upstream_sock, tools.placement))
            for name, spec in specs.items()
        }
        direct = Target("direct", upstream_sock)
        targets = [direct] + [Target(n, c.front, c) for n, c in chains.items()]
        time.sleep(0.5)  # let start-up finish before reading idle memory
        for chain in chains.values():
            chain.baseline = chain.count_processes()
        for target in targets[1:]:
            for half, pid in chains[target.name].roots().items():
                target.figures[f"idle_rss_mb_{half}"] = memory(pid)[0] / MB
        for target in targets:
            loadgen(tools, "latency", target.sock, 50)  # warm-up

        with PeakSampler(chains) as sampler:
            measure_traffic(tools, targets, sizes)
        for target in targets[1:]:
            for half, pid in chains[target.name].roots().items():
                peak = max(sampler.peak_rss[target.name][half], high_water_mark(pid))
                target.figures[f"peak_rss_mb_{half}"] = peak / MB
            target.figures["peak_pss_mb_total"] = sampler.peak_pss[target.name] / MB
            target.figures["added_p50_us"] = (
                target.figures["latency_p50_us"] - direct.figures["latency_p50_us"]
            )
            target.figures["added_p99_us"] = (
                target.figures["latency_p99_us"] - direct.figures["latency_p99_us"]
            )

        for target in targets[1:]:
            hold_idle_connections(
                tools, chains[target.name], upstream_sock, sizes.idle_connections, target.figures
            )
        return {target.name: target.figures for target in targets}


def hold_idle_connections(
    tools: Tools, chain: RunningChain, upstream_sock: Path, count: int, figures: Figures
) -> None:
    argv = tools.placement.on_wsl_side([str(tools.loadgen), "hold", str(chain.front), str(count)])
    holder = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        opened = json.loads(holder.stdout.readline() or "{}").get("open", 0)
        figures["hold_connections"] = opened
        # Connected at the front is not yet relayed: wait until the upstream has them all.
        wait_for(lambda: upstream_open(upstream_sock) >= opened, 120, "idle connections")
        time.sleep(0.5)
        chain.check_alive()
        pss_total = 0
        for name, pid in chain.roots().items():
            rss, pss = memory(pid)
            figures[f"hold_rss_mb_{name}"] = rss / MB
            pss_total += pss
        figures["hold_pss_mb_total"] = pss_total / MB
    finally:
        if holder.stdin:
            holder.stdin.close()
        try:
            holder.wait(30)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()
    wait_for(lambda: upstream_open(upstream_sock) <= 0, 60, "idle connections to close")


def version_seconds(program: Sequence[str], runs: int) -> float:
    """Median time from exec to the first line `--version` prints."""
    times = []
    for _ in range(runs):
        begin = time.perf_counter()
        proc = subprocess.Popen([*program, "--version"], stdout=subprocess.PIPE, cwd=ROOT)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        times.append(time.perf_counter() - begin)
        proc.stdout.read()
        if proc.wait() != 0 or not line:
            raise RuntimeError(f"{shlex.join(program)} --version failed")
    return statistics.median(times)


# --- output ------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def table(
    rows: list[Row], columns: dict[str, Figures], sizes: Sizes
) -> tuple[str, list[dict[str, Any]]]:
    header = ("metric", "unit", "direct", "tool", "socat", "tool/socat", "bar", "target")
    lines: list[tuple[str, ...]] = [header]
    records = []
    for row in rows:
        if row.key.startswith("noauth_") and row.key not in columns["tool"]:
            continue  # the comparison was not asked for
        tool = columns["tool"].get(row.key)
        socat = columns["socat"].get(row.socat_key or row.key)
        direct = columns["direct"].get(row.key) if row.direct else None
        # A ratio of two shares (%) says nothing the shares do not.
        ratio = tool / socat if tool is not None and socat and row.unit != "%" else None
        verdict = row.bar.verdict(tool, socat)
        tool_only = row.key.startswith(("frozen_", "version_"))  # nothing to compare with
        lines.append(
            (
                row.label,
                row.unit,
                fmt(direct, row.digits) if row.direct else "",
                fmt(tool, row.digits),
                "" if tool_only else fmt(socat, row.digits),
                "" if ratio is None else f"{ratio:.2f}x",
                row.bar.describe(),
                verdict,
            )
        )
        records.append(
            {
                "key": row.key,
                "label": row.label.strip(),
                "unit": row.unit,
                "direct": direct,
                "tool": tool,
                "socat": socat,
                "ratio_tool_to_socat": ratio,
                "bar": row.bar.describe(),
                "target": verdict,
            }
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    right = {2, 3, 4, 5}
    out = []
    for n, line in enumerate(lines):
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * width for width in widths))
    notes = (
        f"latency: {sizes.latency_requests} sequential requests, each on a new connection; "
        "added = relayed - direct.\n"
        f"transfers: {sizes.upload_bytes / (1 << 20):g} MiB up, "
        f"{sizes.download_bytes / (1 << 20):g} MiB down, median of {sizes.transfer_runs} "
        "run(s); MB = 10^6 bytes.\n"
        f"concurrent: {sizes.rate_clients} clients, a new connection per request, "
        f"{sizes.rate_seconds:g} s.\n"
        f"idle conns: {sizes.idle_connections} connections held open through the chain.\n"
        "socat memory: summed over the listener and its forks (RSS counts shared pages in "
        "every fork; PSS splits them).\n"
        "tool/socat above 1 is better for MB/s and req/s, worse for every other row."
    )
    return "\n".join(out) + "\n\n" + notes, records


def machine() -> dict[str, Any]:
    model = ""
    with suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    socat_version = subprocess.run(["socat", "-V"], capture_output=True, text=True, check=False)
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "socat": next((ln for ln in socat_version.stdout.splitlines() if "version" in ln), ""),
    }


# --- main ----------------------------------------------------------------------------------------


def parse_program(text: str) -> list[str]:
    argv = shlex.split(text)
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable  # the interpreter running the benchmark: the venv's
    elif argv and "/" in argv[0]:
        argv[0] = str((ROOT / argv[0]).resolve())
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--program",
        default="python -m tailscale_wsl2",
        help="the program under test (default: %(default)s; or dist/tailscale-wsl2)",
    )
    parser.add_argument(
        "--frozen",
        type=Path,
        default=FROZEN_BINARY,
        help="frozen binary for the start-up and size rows, if present",
    )
    parser.add_argument(
        "--compare-auth",
        action="store_true",
        help="also run the tool with --insecure-no-auth (the 'no auth' rows)",
    )
    parser.add_argument("--quick", action="store_true", help="shorter run, for development")
    parser.add_argument(
        "--pin-sides",
        action="store_true",
        help="run each side on its own core, as on two machines (the default leaves "
        "placement to the scheduler)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write figures as JSON")
    parser.add_argument(
        "--bars",
        choices=("current", "later"),
        default="current",
        help="which targets to judge against",
    )
    args = parser.parse_args(argv)

    began = time.monotonic()
    load_before = os.getloadavg()[0]
    sizes = QUICK if args.quick else FULL
    program = parse_program(args.program)
    tools = build_tools(chosen_placement(parser, args.pin_sides))
    print(f"program under test: {shlex.join(program)}", file=sys.stderr)

    with upstream_serving(tools, "relay-bench-") as (workdir, upstream_sock):
        print("measuring: direct, tool and socat chains, taking turns", file=sys.stderr)
        specs = {"tool": tool_chain(program), "socat": socat_chain()}
        if args.compare_auth:
            specs["noauth"] = tool_chain(program, name="noauth", auth=False)
        columns = measure_chains(specs, tools, upstream_sock, sizes, workdir)
    # The unauthenticated tool's figures are rows of the tool column.
    for key, value in columns.pop("noauth", {}).items():
        columns["tool"][f"noauth_{key}"] = value
    if "noauth_added_p50_us" in columns["tool"]:
        columns["tool"]["noauth_auth_cost_p50_us"] = (
            columns["tool"]["added_p50_us"] - columns["tool"]["noauth_added_p50_us"]
        )

    print("measuring: --version start-up", file=sys.stderr)
    columns["tool"]["version_s"] = version_seconds(program, sizes.version_runs)
    if args.frozen.is_file() and os.access(args.frozen, os.X_OK):
        frozen = [str(args.frozen.resolve())]
        columns["tool"]["frozen_version_s"] = version_seconds(frozen, sizes.version_runs)
        columns["tool"]["frozen_size_mb"] = args.frozen.stat().st_size / MB

    elapsed = time.monotonic() - began
    text, records = table(rows_for(args.bars), columns, sizes)
    host = machine()
    print(f"program: {shlex.join(program)}")
    print(f"machine: {host['nproc']} cores, {host['cpu']}, Linux {host['kernel']}, "
          f"Python {host['python']}, {host['socat']}")  # fmt: skip
    print(f"placement: {tools.placement.description}")
    load_after = os.getloadavg()[0]
    print(f"load average (1 min) at start / end: {load_before:.2f} / {load_after:.2f} "
          "(above the core count means other work shared the CPU)\n")  # fmt: skip
    print(text)
    print(f"\nrun time: {elapsed:.0f} s ({'quick' if args.quick else 'full'} run)")
    if args.json:
        document = {
            "program": program,
            "quick": args.quick,
            "bars": args.bars,
            "sizes": asdict(sizes),
            "machine": host,
            "run_seconds": elapsed,
            "load_average": [load_before, load_after],
            "placement": tools.placement.description,
            "figures": columns,
            "rows": records,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
