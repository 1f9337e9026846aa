"""Spare tasks: jobs run in tasks that outlive them, and joined without a nursery."""

import gc
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from tailscale_wsl2.relay.spare_tasks import JoinableJob, SpareTask, SpareTasks

Work = Callable[[], Awaitable[None]]


@asynccontextmanager
async def spare_tasks(keep: int = 8) -> AsyncIterator[tuple[SpareTasks, trio.Nursery]]:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            tasks = SpareTasks(nursery, keep=keep)
            yield tasks, nursery
            tasks.close()


class TaskNoter:
    """A job that notes the task it ran in, then waits for `release`."""

    def __init__(self, release: trio.Event | None = None) -> None:
        self.release = release
        self.tasks: list[trio.lowlevel.Task] = []

    async def __call__(self, here: SpareTask) -> None:
        self.tasks.append(trio.lowlevel.current_task())
        if self.release is not None:
            await self.release.wait()


async def test_a_task_that_finished_its_job_runs_the_next() -> None:
    noter = TaskNoter()
    async with spare_tasks() as (tasks, nursery):
        tasks.run_soon(noter)
        await trio.testing.wait_all_tasks_blocked()
        tasks.run_soon(noter)
        await trio.testing.wait_all_tasks_blocked()
        assert len(nursery.child_tasks) == 1
    assert len(noter.tasks) == 2
    assert noter.tasks[0] is noter.tasks[1]


async def test_a_parked_task_lets_go_of_its_last_job() -> None:
    # What a job holds (a connection's closed streams, a session) must not live
    # on for as long as its task waits for the next job.
    noter = TaskNoter()
    last_job = weakref.ref(noter)
    async with spare_tasks() as (tasks, nursery):
        tasks.run_soon(noter)
        del noter
        await trio.testing.wait_all_tasks_blocked()
        assert len(nursery.child_tasks) == 1  # parked
        gc.collect()
        assert last_job() is None


async def test_no_more_than_keep_tasks_stay_parked() -> None:
    noter = TaskNoter(trio.Event())
    async with spare_tasks(keep=2) as (tasks, nursery):
        for _ in range(5):
            tasks.run_soon(noter)
        await trio.testing.wait_all_tasks_blocked()
        assert len(nursery.child_tasks) == 5
        assert noter.release is not None
        noter.release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert len(nursery.child_tasks) == 2


async def test_close_ends_parked_tasks_and_running_ones_after_their_job() -> None:
    noter = TaskNoter(trio.Event())
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            tasks = SpareTasks(nursery)
            tasks.run_soon(TaskNoter())  # finishes at once and parks
            tasks.run_soon(noter)
            await trio.testing.wait_all_tasks_blocked()
            assert len(nursery.child_tasks) == 2
            tasks.close()
            await trio.testing.wait_all_tasks_blocked()
            assert len(nursery.child_tasks) == 1  # the parked one ended
            assert noter.release is not None
            noter.release.set()
        # The nursery closed: the running task ended after its job instead of parking.
    assert len(noter.tasks) == 1


async def test_cancelling_the_nursery_ends_parked_tasks() -> None:
    with trio.move_on_after(5) as waited_too_long:
        async with trio.open_nursery() as nursery:
            tasks = SpareTasks(nursery)
            tasks.run_soon(TaskNoter())
            await trio.testing.wait_all_tasks_blocked()
            assert len(nursery.child_tasks) == 1  # parked
            nursery.cancel_scope.cancel()
    # The nursery closed at once: the parked task gave up its wait.
    assert not waited_too_long.cancelled_caught


async def test_a_job_that_cancels_its_scope_ends_its_task() -> None:
    noter = TaskNoter()

    async def cancel_myself(here: SpareTask) -> None:
        await noter(here)
        here.cancel_scope.cancel()
        await trio.sleep_forever()  # ended by the cancellation

    async with spare_tasks() as (tasks, nursery):
        tasks.run_soon(cancel_myself)
        await trio.testing.wait_all_tasks_blocked()
        assert not nursery.child_tasks  # not parked with its scope cancelled
        tasks.run_soon(noter)
    assert len(noter.tasks) == 2
    assert noter.tasks[0] is not noter.tasks[1]


async def test_an_error_in_a_job_reaches_the_nursery() -> None:
    async def fail(here: SpareTask) -> None:
        raise ValueError("a bug")

    with pytest.raises(BaseExceptionGroup) as raised:
        async with spare_tasks() as (tasks, _):
            tasks.run_soon(fail)
    assert raised.group_contains(ValueError, match="a bug")


async def test_join_waits_until_the_job_is_done() -> None:
    release = trio.Event()
    steps: list[str] = []

    async def work() -> None:
        await release.wait()
        steps.append("job done")

    job = JoinableJob(work)
    async with spare_tasks() as (tasks, _):
        tasks.run_soon(job)
        await trio.testing.wait_all_tasks_blocked()
        assert not job.done
        release.set()
        await job.join()
        steps.append("joined")
        assert job.done
    assert steps == ["job done", "joined"]


async def test_a_job_ended_before_it_starts_does_not_run() -> None:
    ran: list[str] = []

    async def work() -> None:
        ran.append("work")

    job = JoinableJob(work)
    async with spare_tasks() as (tasks, _):
        tasks.run_soon(job)
        job.end()  # its task has not run yet
        await job.join()
    assert ran == []


def waiting_until_cancelled(steps: list[str], *, cleanup: float = 0) -> Work:
    """A job's work that waits until cancelled, then cleans up (shielded, for
    `cleanup` seconds) and notes "cancelled" in `steps`."""

    async def work() -> None:
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(cleanup)
            steps.append("cancelled")

    return work


async def test_end_cancels_a_running_job() -> None:
    steps: list[str] = []
    job = JoinableJob(waiting_until_cancelled(steps))
    async with spare_tasks() as (tasks, nursery):
        tasks.run_soon(job)
        await trio.testing.wait_all_tasks_blocked()
        job.end()
        await job.join()
        await trio.testing.wait_all_tasks_blocked()
        assert not nursery.child_tasks  # its task ended with it
    assert steps == ["cancelled"]


async def test_a_cancelled_join_ends_the_job_and_returns_once_it_is_done() -> None:
    steps: list[str] = []
    job = JoinableJob(waiting_until_cancelled(steps, cleanup=0.01))
    async with spare_tasks() as (tasks, _):
        tasks.run_soon(job)
        await trio.testing.wait_all_tasks_blocked()  # the job runs
        with trio.CancelScope() as joining:
            joining.cancel()
            try:
                await job.join()
            finally:
                steps.append("join left")
        assert joining.cancelled_caught
    assert steps == ["cancelled", "join left"]
