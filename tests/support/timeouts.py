"""A test over its time limit fails with the stacks that show where it waits.

pytest-timeout's `signal` method fails the test and lets the run go on, but the stack it
shows for a trio test is trio's event loop waiting in epoll, the same for every deadlock, and
raising into that loop breaks every later trio test (see `start_alarm`).
What tells one deadlock from another is where each trio *task* is parked, so the failure
message here carries the task tree's await stacks (and the other threads' stacks, for work
handed to threads). tests/conftest.py installs this through pytest-timeout's
`pytest_timeout_set_timer` hook; the time limit itself is in pyproject.toml.
"""

import importlib.util
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import pytest
import trio

__all__ = ["CANCEL_GRACE_SECONDS", "start_alarm", "timeout_report"]

# How long a timed-out trio test has to unwind from its cancellation before the alarm raises.
CANCEL_GRACE_SECONDS = 10.0


def _tasks(task: trio.lowlevel.Task, depth: int = 0) -> Iterator[tuple[int, trio.lowlevel.Task]]:
    yield depth, task
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            yield from _tasks(child, depth + 1)


def _package_directory(name: str) -> str:
    spec = importlib.util.find_spec(name)
    return str(Path(spec.origin).parent) if spec and spec.origin else "/nonexistent"


# Frames inside these packages are the same in every report: the machinery, not the wait.
_MACHINERY = (_package_directory("trio"), _package_directory("pytest_trio"))


def _own_frames(task: trio.lowlevel.Task) -> list[str]:
    stack = traceback.StackSummary.extract(
        (frame, line)
        for frame, line in task.iter_await_frames()
        if not frame.f_code.co_filename.startswith(_MACHINERY)
    )
    return "".join(stack.format()).splitlines()


def trio_task_stacks() -> str:
    """Where each task of the trio run in this thread waits, in code outside trio itself.

    Tasks with no such frame (trio's and pytest-trio's own) are left out; "" outside a run.
    """
    try:
        root = trio.lowlevel.current_root_task()
    except RuntimeError:
        return ""
    if root is None:
        return ""
    lines: list[str] = []
    for _, task in _tasks(root):
        frames = _own_frames(task)
        if frames:
            lines.append(f"task {task.name}")
            lines.extend(frames)
    return "\n".join(lines)


def other_thread_stacks() -> str:
    here = threading.get_ident()
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    parts = [
        f"thread {names.get(ident, ident)}\n" + "".join(traceback.format_stack(frame))
        for ident, frame in sys._current_frames().items()
        if ident != here
    ]
    return "\n".join(parts)


def timeout_report(seconds: float) -> str:
    parts = [f"Timeout (>{seconds:g}s) from pytest-timeout."]
    tasks = trio_task_stacks()
    if tasks:
        parts.append(f"trio tasks, where each waits:\n{tasks}")
    threads = other_thread_stacks()
    if threads:
        parts.append(f"other threads:\n{threads}")
    return "\n\n".join(parts)


def _cancel_every_nursery_below(root: trio.lowlevel.Task) -> None:
    """Cancel the test and its fixtures; trio's own system tasks (the root's) are left alone."""
    for depth, task in _tasks(root):
        if depth > 0:
            for nursery in task.child_nurseries:
                nursery.cancel_scope.cancel()


def start_alarm(seconds: float, timed_out_in_trio: Callable[[str], None]) -> Callable[[], None]:
    """Fail the running test after `seconds` (main thread only); returns the cancel.

    Outside a trio run the alarm raises pytest's failure where the test waits. Inside one it
    must not: an exception raised into trio's loop from a signal handler wrecks the run's
    state in this thread, and every later trio test would fail with "run() from inside a
    run()". So it hands the report to `timed_out_in_trio` (the caller fails the test once the
    call returns) and cancels the test's nurseries through the run's own token. Should the
    test ignore that cancellation, the raise comes anyway after a grace period.
    """

    def last_resort(signum: int, frame: FrameType | None) -> None:
        __tracebackhide__ = True
        pytest.fail(timeout_report(seconds))

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        __tracebackhide__ = True
        try:
            token = trio.lowlevel.current_trio_token()
            root = trio.lowlevel.current_root_task()
        except RuntimeError:  # no trio run in this thread
            pytest.fail(timeout_report(seconds))
        if root is None:
            pytest.fail(timeout_report(seconds))
        timed_out_in_trio(timeout_report(seconds))
        token.run_sync_soon(_cancel_every_nursery_below, root)
        signal.signal(signal.SIGALRM, last_resort)
        signal.setitimer(signal.ITIMER_REAL, CANCEL_GRACE_SECONDS)

    def cancel() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    return cancel
