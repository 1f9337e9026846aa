# Instructions per request of each half, counted by valgrind's callgrind.
#
# bench/ab.py compares CPU time, which on a shared 2-core machine moves by ten per cent
# and more between runs of one tree: a change worth a few per cent needs many turns there,
# and sometimes no number of turns settles it. Instructions do not move with the machine's
# load. Callgrind counts what each half executes in user space (the interpreter, the
# extension modules, libc), so two runs of one tree land within a few per cent of each
# other; what still varies is real (garbage collections, the random pick of
# `noise.LiveAeads`, how many links a burst opens).
#
# For each tree given, with the link sealed and in the clear (--insecure-no-auth), the
# halves run under callgrind in relay_bench.py's chain; after a warm-up, each half's
# counters are zeroed (`callgrind_control -z`) and dumped (`-d`) around:
#
#   sequential   N requests one after another, each on a new connection
#   concurrent   C clients for S seconds, a new connection per request
#
# Under callgrind the halves run some fifty times slower, so the concurrent phase has a
# few clients, not 200 (with 200, most requests time out). Not counted: the kernel's work
# (system calls, wake-ups, the loopback TCP between the halves), about a third of the
# halves' CPU time (`perf`, docs/benchmarks.md).

"""Instructions per request of each half, counted by valgrind's callgrind."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from ab import describe, imported_from, tree_python
from relay_bench import (
    Tools,
    build_tools,
    chosen_placement,
    loadgen,
    tool_chain,
    upstream_serving,
)

HALVES = ("windows", "wsl")
# Not counted. Slowed down, the halves may fail the first of them (a link's handshake past
# its deadline), which loadgen reports as a warning.
WARM_UP_REQUESTS = 30
# A half under callgrind takes some seconds to import and start listening.
START_TIMEOUT = 300.0


class Callgrind:
    """The valgrind and callgrind_control this run uses, and where the dumps go."""

    def __init__(self, valgrind: str, control: str, dumps: Path) -> None:
        self.valgrind = valgrind
        self.control = control
        self.dumps = dumps

    def wrap(self, program: Sequence[str]) -> list[str]:
        """`program` (which starts with `env NAME=value`) run under callgrind."""
        env, assignment, *rest = program
        tool = [self.valgrind, "--tool=callgrind", f"--callgrind-out-file={self.dumps}/%p.out"]
        return [env, assignment, *tool, *rest]

    def count(
        self, pids: dict[str, int], load: Callable[[], dict[str, Any]]
    ) -> tuple[dict[str, int], dict[str, Any]]:
        """Instructions each half executed while `load` ran, and what `load` returned."""
        for pid in pids.values():
            self._control("-z", pid)
        result = load()
        return {half: self._dumped(pid) for half, pid in pids.items()}, result

    def _control(self, option: str, pid: int) -> None:
        subprocess.run([self.control, option, str(pid)], check=True, capture_output=True)

    def _dumped(self, pid: int) -> int:
        before = set(self.dumps.glob(f"{pid}.out.*"))
        self._control("-d", pid)
        (dump,) = set(self.dumps.glob(f"{pid}.out.*")) - before
        for line in dump.read_text(errors="replace").splitlines():
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
        raise RuntimeError(f"{dump}: no total in the dump")


def measure(
    tools: Tools,
    callgrind: Callgrind,
    tree: Path,
    auth: bool,
    workdir: Path,
    upstream_sock: Path,
    args: argparse.Namespace,
) -> list[str]:
    """One tree's chain, sealed or in the clear: a line per phase."""
    program = callgrind.wrap([*tree_python(tree), "-m", "tailscale_wsl2"])
    lines = []
    chain_spec = tool_chain(program, auth=auth)
    with chain_spec.run(workdir, upstream_sock, tools.placement, START_TIMEOUT) as chain:
        loadgen(tools, "latency", chain.front, WARM_UP_REQUESTS)
        phases: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("sequential", partial(loadgen, tools, "latency", chain.front, args.requests)),
            (
                f"{args.clients} clients",
                partial(loadgen, tools, "rate", chain.front, args.clients, args.seconds),
            ),
        ]
        for phase, load in phases:
            counted, result = callgrind.count(chain.roots(), load)
            requests = max(int(result["requests"]), 1)
            per_half = {half: counted[half] / requests for half in HALVES}
            errors = f", {result['errors']} failed" if result["errors"] else ""
            lines.append(
                f"  {'sealed' if auth else 'clear':6}  {phase:12}  {requests:>6,}  "
                f"{per_half['windows']:>10,.0f}  {per_half['wsl']:>10,.0f}  "
                f"{sum(per_half.values()):>10,.0f}{errors}"
            )
        chain.check_alive()
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("trees", nargs="+", type=Path, help="checkouts to measure, in turn")
    parser.add_argument("--requests", type=int, default=300, help="sequential requests")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=10.0, help="concurrent phase length")
    parser.add_argument(
        "--link", choices=("both", "sealed", "clear"), default="both", help="which links"
    )
    args = parser.parse_args(argv)
    valgrind, control = shutil.which("valgrind"), shutil.which("callgrind_control")
    if valgrind is None or control is None:
        parser.error("needs valgrind with callgrind_control (Debian: apt-get install valgrind)")
    if args.requests < 1 or args.clients < 1 or args.seconds <= 0:
        parser.error("--requests, --clients and --seconds must be positive")
    trees = [tree.resolve() for tree in args.trees]
    for tree in trees:
        if not (tree / "tailscale_wsl2" / "__main__.py").is_file():
            parser.error(f"{tree}: no tailscale_wsl2 package there")
        if (imported := imported_from(tree)) != tree:
            parser.error(f"{tree}: its halves would import the relay from {imported}")
    modes = {"both": (True, False), "sealed": (True,), "clear": (False,)}[args.link]
    tools = build_tools(chosen_placement(parser, False))

    print("instructions per request (callgrind, user space only)\n")
    with (
        tempfile.TemporaryDirectory(prefix="relay-callgrind-") as dumps,
        upstream_serving(tools, "relay-instr-") as (workdir, upstream_sock),
    ):
        callgrind = Callgrind(valgrind, control, Path(dumps))
        for tree in trees:
            print(f"{describe(tree)}")
            print(f"  {'link':6}  {'phase':12}  {'reqs':>6}  {'Windows':>10}  "
                  f"{'WSL2':>10}  {'both':>10}")  # fmt: skip
            for auth in modes:
                for line in measure(tools, callgrind, tree, auth, workdir, upstream_sock, args):
                    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
