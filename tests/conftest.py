import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.chain import FROZEN_BINARY, module_program
from tests.support.ci import require
from tests.support.timeouts import start_alarm

# The report of a trio test stopped by its time limit, for pytest_runtest_call to fail it with.
TIMED_OUT_IN_TRIO = pytest.StashKey[str]()

# tests/in_wine runs under a Windows Python (tools/winpy, driven by
# tests/end_to_end/test_in_wine_suite.py); collected here it would only show as skips.
collect_ignore = ["in_wine"] if sys.platform != "win32" else []


@pytest.fixture(params=["module", pytest.param("frozen", marks=pytest.mark.frozen)])
def program(request: pytest.FixtureRequest) -> list[str]:
    """The program under test: the package in this interpreter, or the frozen binary."""
    if request.param == "module":
        return module_program()
    require(FROZEN_BINARY.exists(), f"no frozen binary at {FROZEN_BINARY}: run `make build`")
    return [str(FROZEN_BINARY)]


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """pytest-timeout's `signal` method, failing with the trio tasks' stacks (support/timeouts).

    A trio test is cancelled rather than interrupted, then failed by `pytest_runtest_call`.

    Returns None (pytest-timeout's own timer then) where a signal cannot be used: another
    method configured, no SIGALRM (Windows), or a run outside the main thread.
    """
    if (
        settings.method != "signal"
        or not hasattr(signal, "SIGALRM")
        or threading.current_thread() is not threading.main_thread()
    ):
        return None
    item.stash[TIMED_OUT_IN_TRIO] = ""

    def timed_out_in_trio(report: str) -> None:
        item.stash[TIMED_OUT_IN_TRIO] = report

    item.cancel_timeout = start_alarm(settings.timeout, timed_out_in_trio)  # type: ignore[attr-defined]
    return True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A trio test cancelled by its time limit fails with the report, whatever it raised."""
    try:
        return (yield)
    finally:
        report = item.stash.get(TIMED_OUT_IN_TRIO, "")
        if report:
            # The cancellation that unwound the test is ours, not news: the report replaces it.
            raise pytest.fail.Exception(report, pytrace=False) from None
