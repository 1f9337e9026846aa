"""Runs the Windows test suite (tests/in_wine) under Wine, from the normal Linux suite.

Strategy: `tools/wine-env` builds or reuses the cached Wine prefix and Windows CPython (a
no-op of a few milliseconds once cached; minutes on a fresh machine), then `tools/winpy`
runs pytest on tests/in_wine in that Windows Python, as a subprocess. The test demands a
clean result: exit status 0, at least one test passed, none skipped (a skip there would mean
the Windows code did not run).

Without Wine (and no way to install it: not root, or no apt-get) the test skips with the
reason, except in CI, where it fails: CI must run the Windows half for real.
"""

import os
import re
import subprocess
import sys
import time

import pytest

from tests.support import ROOT
from tests.support.wine_chain import WINPY, prepare_wine

pytestmark = pytest.mark.wine

SUITE_TIMEOUT = 600.0


def summary_counts(pytest_output: str) -> dict[str, int]:
    """{"passed": 16, "skipped": 1, ...} from the final summary line of `pytest -q`."""
    summary_lines = [
        line
        for line in pytest_output.splitlines()
        if re.search(r"\d+ (passed|failed|skipped|errors?|deselected)\b", line)
    ]
    if not summary_lines:
        return {}
    return {word: int(count) for count, word in re.findall(r"(\d+) ([a-z]+)", summary_lines[-1])}


def test_summary_counts_reads_pytest_q_output() -> None:
    assert summary_counts("....\n16 passed in 2.08s\n") == {"passed": 16}
    assert summary_counts("SKIPPED [1] x.py:3: why\n3 passed, 1 skipped in 0.1s") == {
        "passed": 3,
        "skipped": 1,
    }
    assert summary_counts("no tests ran in 0.01s") == {}


# The whole Windows suite under Wine, bounded by SUITE_TIMEOUT (600 s) itself.
@pytest.mark.timeout(900)
def test_windows_suite_passes_under_wine() -> None:
    if sys.platform == "win32":
        pytest.skip("on Windows, tests/in_wine runs natively: pytest tests/in_wine")

    setup_seconds = prepare_wine("run the Windows suite")

    # The inner pytest takes its options from the command line only.
    env = {name: value for name, value in os.environ.items() if not name.startswith("PYTEST_")}
    suite_started = time.monotonic()
    suite = subprocess.run(
        [str(WINPY), "-m", "pytest", "tests/in_wine", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SUITE_TIMEOUT,
        check=False,
    )
    suite_seconds = time.monotonic() - suite_started
    output = suite.stdout + suite.stderr
    print(f"wine-env: {setup_seconds:.1f} s; Windows suite under Wine: {suite_seconds:.1f} s")

    assert suite.returncode == 0, f"the Windows suite failed under Wine:\n{output}"
    counts = summary_counts(output)
    assert counts.get("passed", 0) > 0, f"no Windows test passed:\n{output}"
    assert counts.get("skipped", 0) == 0, f"Windows tests were skipped under Wine:\n{output}"
