"""`make mutation`: how many deliberately broken versions of each pure-logic module its tests catch.

mutmut 3 mutates one function at a time and runs the tests that reach it. Its settings live in
one `[tool.mutmut]` table read from the working directory, so each module is measured in a
scratch copy of the repository (build/mutation/<module>/) whose pyproject.toml names that
module alone and that module's own test files: a module's score then says what its own tests
catch, not what some distant end-to-end test happens to trip over. Each run starts from a
fresh copy, so a score never mixes results from older code or tests.

A mutant counts as caught when a test fails (a per-test time limit turns a deadlock into a
failure), when mutmut stops it for using far more CPU time than the clean run, or when
`mypy --strict` (part of `make lint`) rejects it, as it does `count = None` in an int field.
Mutants marked `# pragma: no mutate` (equivalent ones, each with its reason beside it) are
not generated.

    python tools/mutation.py                      every module in TARGETS
    python tools/mutation.py windows/ipconfig.py  only these (paths under tailscale_wsl2/)
    python tools/mutation.py --report-only        the last run's table and survivors again
    python tools/mutation.py --tests-only         what the tests alone catch (no mypy filter)
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TARGETS", "Score", "main", "measure"]

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / "build" / "mutation"

# The one list of what is measured: module (under tailscale_wsl2/) -> its own test files.
TARGETS: dict[str, tuple[str, ...]] = {
    "net/endpoints.py": ("tests/net/test_endpoints.py",),
    "wsl/side.py": ("tests/wsl/test_side.py",),
    "windows/tools.py": ("tests/windows/test_tools.py",),
    "windows/firewall_rules.py": (
        "tests/windows/test_tools.py",
        "tests/windows/test_firewall_rules.py",
    ),
    "windows/ipconfig.py": ("tests/windows/test_ipconfig.py",),
    "link/handshake.py": ("tests/link/test_handshake.py",),
    "plan/halves.py": ("tests/plan/test_halves.py",),
    "wsl/discovery.py": ("tests/wsl/test_discovery.py",),
    "link/sessions.py": ("tests/link/test_sessions.py",),
}

# Per test under mutation: a deadlocking mutant fails here instead of at pyproject's general
# limit, which is sized for the slow end-to-end tests; these unit tests take well under a second.
MUTANT_TEST_TIMEOUT_SECONDS = 30
# mutmut's forced-failure run makes every mutated function raise, so the tests' sockets are
# left to the garbage collector; the suite's "warnings are errors" would turn that into an
# exception out of pytest itself, which mutmut takes for a broken set-up.
PYTEST_ARGS = [
    "-p",
    "no:cacheprovider",
    "-p",
    "no:unraisableexception",
    f"--timeout={MUTANT_TEST_TIMEOUT_SECONDS}",
]
WORKERS = 2
CAUGHT = ("killed", "timeout", "caught by type check")
RESULT_LINE = re.compile(r"^\s+(?P<mutant>\S+): (?P<status>.+)$")


@dataclass(frozen=True)
class Score:
    module: str
    statuses: Counter[str]
    survivors: tuple[str, ...]

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def caught(self) -> int:
        return sum(self.statuses[status] for status in CAUGHT)

    def row(self) -> str:
        percent = 100 * self.caught / self.total if self.total else 100.0
        s = self.statuses
        return (
            f"| {self.module} | {self.caught}/{self.total} | {percent:.1f} % | {s['survived']} "
            f"| {s['timeout']} | {s['caught by type check']} | {s['no tests']} "
            f"| {s['suspicious']} |"
        )


TABLE_HEADER = (
    "| module | caught/total | score | survived | timeout | by mypy | no test | suspicious |\n"
    "|---|---|---|---|---|---|---|---|"
)


def type_check_command(module: str) -> list[str]:
    """`make lint`'s mypy over the mutated module: a mutant it rejects never reaches CI.

    (mutmut recognises mypy by a "mypy" word in the command and reads its JSON lines.)
    """
    # mutmut's generated dispatch code carries `# type: ignore` comments mypy may not need.
    checks = ["--strict", "--no-warn-unused-ignores", "--output", "json"]
    return [sys.executable, "-m", "mypy", *checks, f"tailscale_wsl2/{module}"]


def workdir_name(module: str) -> str:
    return module.removesuffix(".py").replace("/", "-")


def scratch_copy(module: str, tests: tuple[str, ...], *, with_mypy: bool = True) -> Path:
    """A fresh copy of the package and tests, configured to mutate `module` alone."""
    workdir = SCRATCH / workdir_name(module)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for tree in ("tailscale_wsl2", "tests"):
        shutil.copytree(ROOT / tree, workdir / tree, ignore=ignore)
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    if "mutmut" in settings.get("tool", {}):
        raise SystemExit("pyproject.toml has a [tool.mutmut] table: tools/mutation.py writes it")
    table = "\n".join(
        [
            "",
            "[tool.mutmut]",
            'source_paths = ["tailscale_wsl2"]',
            f'only_mutate = ["tailscale_wsl2/{module}"]',
            f"pytest_add_cli_args_test_selection = {json.dumps(list(tests))}",
            f"pytest_add_cli_args = {json.dumps(PYTEST_ARGS)}",
            "use_git_change_detection = false",
            f"type_check_command = {json.dumps(type_check_command(module) if with_mypy else [])}",
            "",
        ]
    )
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8") + table
    (workdir / "pyproject.toml").write_text(pyproject, encoding="utf-8")
    return workdir


def mutmut(workdir: Path, *args: str, log: Path) -> str:
    environment = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    with log.open("a", encoding="utf-8") as sink:
        done = subprocess.run(
            [sys.executable, "-m", "mutmut", *args],
            cwd=workdir,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=sink,
            text=True,
            check=False,
        )
        sink.write(done.stdout)
    if done.returncode != 0:
        raise SystemExit(f"mutmut {' '.join(args)} failed in {workdir}: see {log}")
    return done.stdout


def measure(module: str, tests: tuple[str, ...], *, with_mypy: bool = True) -> Score:
    workdir = scratch_copy(module, tests, with_mypy=with_mypy)
    mutmut(workdir, "run", f"--max-children={WORKERS}", log=workdir / "mutmut.log")
    return read_results(module)


def read_results(module: str) -> Score:
    """The score of the last run over `module`, from its scratch copy."""
    workdir = SCRATCH / workdir_name(module)
    log = workdir / "mutmut.log"
    statuses: Counter[str] = Counter()
    survivors: list[str] = []
    for line in mutmut(workdir, "results", "--all=true", log=log).splitlines():
        match = RESULT_LINE.match(line)
        if match is None:
            continue
        statuses[match["status"]] += 1
        if match["status"] not in CAUGHT:
            survivors.append(f"{match['mutant']}: {match['status']}")
    # Each survivor's diff, to read beside the module (mutmut show needs the scratch copy).
    with (workdir / "survivors.diff").open("w", encoding="utf-8") as diffs:
        for survivor in survivors:
            diffs.write(mutmut(workdir, "show", survivor.split(":")[0], log=log) + "\n")
    return Score(module, statuses, tuple(survivors))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="modules under tailscale_wsl2/ (default: all)")
    parser.add_argument(
        "--report-only", action="store_true", help="print the last run's scores; mutate nothing"
    )
    parser.add_argument(
        "--tests-only", action="store_true", help="what the tests alone catch: no mypy filter"
    )
    arguments = parser.parse_args(argv)
    chosen = arguments.modules or list(TARGETS)
    unknown = [module for module in chosen if module not in TARGETS]
    if unknown:
        parser.error(f"not in tools/mutation.py's TARGETS: {', '.join(unknown)}")
    scores = []
    for module in chosen:
        if arguments.report_only:
            score = read_results(module)
        else:
            print(f"mutating tailscale_wsl2/{module} ...", flush=True)
            score = measure(module, TARGETS[module], with_mypy=not arguments.tests_only)
        print(TABLE_HEADER.splitlines()[0], score.row(), sep="\n", flush=True)
        for survivor in score.survivors:
            print(f"    {survivor}")
        if score.survivors:
            print(f"    (diffs: {SCRATCH.relative_to(ROOT)}/{workdir_name(module)}/survivors.diff)")
        scores.append(score)
    print("\n" + TABLE_HEADER)
    for score in scores:
        print(score.row())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
