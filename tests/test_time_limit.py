"""The suite's per-test time limit: a deadlock is a failure that says where, and the run goes on.

A throwaway suite runs in a child pytest with this suite's hooks (tests/conftest.py) and a
one-second limit: a sync test that blocks, a trio one that waits forever, then trio tests
that must still pass (raising into trio's loop from the alarm would break every later run).
"""

import os
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

DEADLOCKS = """
import threading

import trio


def test_sync_deadlock() -> None:
    threading.Event().wait()  # the sync wait


async def test_trio_deadlock() -> None:
    never = trio.Event()
    await never.wait()  # the trio wait


async def test_trio_after_a_timeout() -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.sleep, 0)


async def test_trio_later_still() -> None:
    assert trio.lowlevel.current_root_task() is not None
"""


def test_a_deadlocked_test_fails_with_where_it_waits_and_later_trio_tests_still_run(
    tmp_path: Path,
) -> None:
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import TIMED_OUT_IN_TRIO, pytest_runtest_call, "
        "pytest_timeout_set_timer\n",
        encoding="utf-8",
    )
    (tmp_path / "test_deadlocks.py").write_text(DEADLOCKS, encoding="utf-8")
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("PYTEST_")
    }
    environment["PYTHONPATH"] = str(ROOT)
    child = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"),
            *("-o", "trio_mode=true", "-o", "timeout=1", "--rootdir", str(tmp_path), str(tmp_path)),
        ],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = child.stdout + child.stderr
    assert "2 failed, 2 passed" in output, output
    assert "test_trio_deadlock - Failed: Timeout" in output, output
    assert "test_sync_deadlock - Failed: Timeout" in output, output
    # The trio test's report names the line its task waits on, not trio's event loop.
    assert "task <test 'test_trio_deadlock'>" in output, output
    assert "await never.wait()  # the trio wait" in output, output
    assert "threading.Event().wait()  # the sync wait" in output, output
