# CPU per request of two or more trees of the relay, measured in turns.
#
# For changes too small for `make bench` to resolve: its ratios move by ±20 %
# from run to run on a shared 2-core machine, while a change to the hot path
# may be worth 5 %. This runs only the tool's chain (no socat), from each tree
# given (a checkout or a `git worktree`, run as `python -m tailscale_wsl2`
# with that tree first on PYTHONPATH), against the same C upstream and load
# generator as relay_bench.py, and takes turns between the trees, so that a
# slow spell of the machine hits each about equally. Per run and tree:
#
#   sequential   N requests one after another, each on a new connection: p50,
#                and each half's user and system CPU per request
#   concurrent   C clients for S seconds, a new connection per request: the
#                rate, and each half's CPU per request
#
# CPU comes from /proc/PID/stat in clock ticks (10 ms here): with 4,000
# requests a figure is good to about 2.5 us. Compare ranges, not single runs;
# the same tree given twice shows how far apart two runs of one tree land.

"""CPU per request of two or more trees of the relay, measured in turns."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay_bench import (
    ROOT,
    RunningChain,
    Tools,
    build_tools,
    chosen_placement,
    cpu_times,
    loadgen,
    tool_chain,
    upstream_serving,
)

HALVES = ("windows", "wsl")
WARM_UP_REQUESTS = 300


@dataclass
class TreeFigures:
    """What the runs measured for one tree, one entry per run."""

    p50_us: list[float] = field(default_factory=list)
    rate_req_s: list[float] = field(default_factory=list)
    # (phase, half, "user" or "system") -> CPU microseconds per request
    cpu_us: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)

    def extend(self, other: TreeFigures) -> None:
        self.p50_us += other.p50_us
        self.rate_req_s += other.rate_req_s
        for key, values in other.cpu_us.items():
            self.cpu_us.setdefault(key, []).extend(values)

    def add_cpu(self, phase: str, used: dict[str, tuple[float, float]], requests: int) -> None:
        for half, times in used.items():
            for kind, seconds in zip(("user", "system"), times, strict=True):
                per_request = seconds / max(requests, 1) * 1e6
                self.cpu_us.setdefault((phase, half, kind), []).append(per_request)


def describe(tree: Path) -> str:
    """The tree's path and commit, with '+' when it has uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(tree), *args], check=False, capture_output=True, text=True
        )
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "no git"
    return f"{tree} ({commit}{'+' if git('status', '--porcelain', '--untracked-files=no') else ''})"


def tree_python(tree: Path) -> list[str]:
    """This interpreter, importing the relay from `tree`.

    `-P`: the halves run with the bench's directory as theirs, and `python -m`
    would otherwise put that first on sys.path, ahead of PYTHONPATH: every tree
    would run this checkout's code.
    """
    return ["env", f"PYTHONPATH={tree}", sys.executable, "-P"]


def imported_from(tree: Path) -> Path:
    """Where the halves started for `tree` import the relay from."""
    done = subprocess.run(
        [*tree_python(tree), "-c", "import tailscale_wsl2; print(tailscale_wsl2.__file__)"],
        check=True, capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    return Path(done.stdout.strip()).parent.parent


def halves_cpu(chain: RunningChain) -> dict[str, tuple[float, float]]:
    return {half: cpu_times(root) for half, root in chain.roots().items()}


def load_with_cpu(
    tools: Tools, chain: RunningChain, mode: str, *args: object
) -> tuple[dict[str, Any], dict[str, tuple[float, float]]]:
    """Run the load generator once: its result, and each half's (user, system) CPU meanwhile."""
    before = halves_cpu(chain)
    result = loadgen(tools, mode, chain.front, *args)
    after = halves_cpu(chain)
    used = {
        half: (after[half][0] - before[half][0], after[half][1] - before[half][1]) for half in after
    }
    if result["errors"]:
        raise RuntimeError(f"{result['errors']} failed requests ({mode})")
    return result, used


def measure_once(
    tools: Tools, tree: Path, upstream_sock: Path, workdir: Path, args: argparse.Namespace
) -> TreeFigures:
    """One run of one tree's chain: a figure of each kind, to add to the tree's."""
    program = [*tree_python(tree), "-m", "tailscale_wsl2"]
    run = TreeFigures()
    with tool_chain(program).run(workdir, upstream_sock, tools.placement) as chain:
        loadgen(tools, "latency", chain.front, WARM_UP_REQUESTS)
        sequential, used = load_with_cpu(tools, chain, "latency", args.requests)
        run.p50_us.append(sequential["p50_us"])
        run.add_cpu("sequential", used, int(sequential["requests"]))
        concurrent, used = load_with_cpu(tools, chain, "rate", args.clients, args.seconds)
        run.rate_req_s.append(concurrent["rate"])
        run.add_cpu("concurrent", used, int(concurrent["requests"]))
        chain.check_alive()
    return run


def cpu_cells(figures: TreeFigures, phase: str) -> str:
    """'user+system' CPU per request of each half: a run's, or ranges over runs."""
    cells = []
    for half in HALVES:
        user, system = (figures.cpu_us[(phase, half, kind)] for kind in ("user", "system"))
        cells.append(f"{span(user)}+{span(system)}")
    return " / ".join(cells)


def both_halves(figures: TreeFigures, phase: str) -> list[float]:
    """User and system CPU per request of both halves together, per run."""
    parts = [figures.cpu_us[(phase, half, kind)] for half in HALVES for kind in ("user", "system")]
    return [sum(run) for run in zip(*parts, strict=True)]


def span(values: Sequence[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:,.0f}" if round(low) == round(high) else f"{low:,.0f}-{high:,.0f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "trees", nargs="*", type=Path, help="checkouts to compare (default: this one)"
    )
    parser.add_argument("--runs", type=int, default=4, help="turns per tree (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=4000, help="sequential requests per run")
    parser.add_argument("--clients", type=int, default=200, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=4.0, help="concurrent phase length")
    parser.add_argument("--pin-sides", action="store_true", help="as relay_bench.py --pin-sides")
    args = parser.parse_args(argv)
    trees = [tree.resolve() for tree in args.trees] or [ROOT]
    for tree in trees:
        if not (tree / "tailscale_wsl2" / "__main__.py").is_file():
            parser.error(f"{tree}: no tailscale_wsl2 package there")
        if (imported := imported_from(tree)) != tree:
            parser.error(f"{tree}: its halves would import the relay from {imported}")
    if args.runs < 1 or args.requests < 1 or args.clients < 1 or args.seconds <= 0:
        parser.error("--runs, --requests, --clients and --seconds must be positive")
    tools = build_tools(chosen_placement(parser, args.pin_sides))

    names = [chr(ord("A") + n) for n in range(len(trees))]
    for name, tree in zip(names, trees, strict=True):
        print(f"tree {name}: {describe(tree)}")
    print(f"placement: {tools.placement.description}; {args.requests} sequential requests, "
          f"{args.clients} clients for {args.seconds:g} s, {args.runs} turn(s) each")  # fmt: skip
    print("CPU: us per request, user+system, Windows half / WSL2 half\n")
    print(f"{'run':>3}  {'tree':4}  {'p50 us':>7}  {'sequential CPU':>17}  "
          f"{'req/s':>6}  {'concurrent CPU':>17}")  # fmt: skip
    figures = {name: TreeFigures() for name in names}
    with upstream_serving(tools, "relay-ab-") as (workdir, upstream_sock):
        for run in range(args.runs):
            for name, tree in zip(names, trees, strict=True):
                this_run = measure_once(tools, tree, upstream_sock, workdir, args)
                figures[name].extend(this_run)
                (p50,), (rate,) = this_run.p50_us, this_run.rate_req_s
                print(f"{run + 1:>3}  {name:4}  {p50:>7.0f}  "
                      f"{cpu_cells(this_run, 'sequential'):>17}  {rate:>6.0f}  "
                      f"{cpu_cells(this_run, 'concurrent'):>17}", flush=True)  # fmt: skip

    print("\nranges over the turns, medians in brackets:")
    for name in names:
        mine = figures[name]
        sequential, concurrent = (
            both_halves(mine, phase) for phase in ("sequential", "concurrent")
        )
        print(f"  {name}: p50 {span(mine.p50_us)} us [{statistics.median(mine.p50_us):.0f}]; "
              f"rate {span(mine.rate_req_s)} req/s [{statistics.median(mine.rate_req_s):,.0f}]\n"
              f"     CPU per request, both halves: sequential {span(sequential)} us "
              f"[{statistics.median(sequential):.0f}], concurrent {span(concurrent)} us "
              f"[{statistics.median(concurrent):.0f}]\n"
              f"     per half: sequential {cpu_cells(mine, 'sequential')}; "
              f"concurrent {cpu_cells(mine, 'concurrent')}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
