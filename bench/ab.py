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


def cpu_used(
    chain: RunningChain, before: dict[str, tuple[float, float]]
) -> dict[str, tuple[float, float]]:
    now = {half: cpu_times(root) for half, root in chain.roots().items()}
    return {half: (now[half][0] - before[half][0], now[half][1] - before[half][1]) for half in now}


def measure_once(
    tools: Tools, tree: Path, upstream_sock: Path, workdir: Path, args: argparse.Namespace
) -> tuple[float, float, dict[str, dict[str, tuple[float, float]]], dict[str, int]]:
    """One run of one tree: p50, rate, CPU used per phase and half, requests per phase."""
    program = ["env", f"PYTHONPATH={tree}", sys.executable, "-m", "tailscale_wsl2"]
    with tool_chain(program).run(workdir, upstream_sock, tools.placement) as chain:
        loadgen(tools, "latency", chain.front, WARM_UP_REQUESTS)
        roots = chain.roots()
        before = {half: cpu_times(root) for half, root in roots.items()}
        sequential = loadgen(tools, "latency", chain.front, args.requests)
        used = {"sequential": cpu_used(chain, before)}
        before = {half: cpu_times(root) for half, root in roots.items()}
        concurrent = loadgen(tools, "rate", chain.front, args.clients, args.seconds)
        used["concurrent"] = cpu_used(chain, before)
        chain.check_alive()
    if sequential["errors"] or concurrent["errors"]:
        raise RuntimeError(f"{tree}: failed requests: {sequential['errors']} sequential, "
                           f"{concurrent['errors']} concurrent")  # fmt: skip
    requests = {"sequential": args.requests, "concurrent": int(concurrent["requests"])}
    return sequential["p50_us"], concurrent["rate"], used, requests


def cpu_cells(figures: TreeFigures, phase: str, pick: int | None) -> str:
    """'user+system' per half for one run (`pick`), or as ranges over all runs."""
    cells = []
    for half in HALVES:
        user, system = (figures.cpu_us[(phase, half, kind)] for kind in ("user", "system"))
        if pick is not None:
            cells.append(f"{user[pick]:.0f}+{system[pick]:.0f}")
        else:
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
                p50, rate, used, requests = measure_once(tools, tree, upstream_sock, workdir, args)
                mine = figures[name]
                mine.p50_us.append(p50)
                mine.rate_req_s.append(rate)
                for phase in used:
                    mine.add_cpu(phase, used[phase], requests[phase])
                print(f"{run + 1:>3}  {name:4}  {p50:>7.0f}  "
                      f"{cpu_cells(mine, 'sequential', -1):>17}  {rate:>6.0f}  "
                      f"{cpu_cells(mine, 'concurrent', -1):>17}", flush=True)  # fmt: skip

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
              f"     per half: sequential {cpu_cells(mine, 'sequential', None)}; "
              f"concurrent {cpu_cells(mine, 'concurrent', None)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
