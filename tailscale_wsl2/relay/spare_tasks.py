"""Tasks that outlive their job and take the next one, instead of a new task each.

The relay runs two jobs per client connection: the connection itself and the
second direction of its copy (`core.py`). Started the ordinary way, that is a
new task for each and a nursery to join the second, whose set-up and tear-down
were a measurable share of both halves' CPU per request under many clients
(bench/NOTEBOOK.md). Here a task that finishes its job parks
(`wait_task_rescheduled`) until `run_soon` hands it the next one, and a job
that must be waited for is joined by rescheduling its waiter, without a nursery.

What a nursery gave for free is kept by hand:
- a job can be ended: each task has one cancel scope for its life, handed to
  the jobs it runs (`SpareTask`); a job that cancels it ends the task too, so a
  cancelled scope is never carried into the next job;
- errors are not lost: an exception that escapes a job escapes its task, into
  the nursery the tasks belong to, as one from a child task would;
- shutdown does not wait on parked tasks: `close` ends them, and a cancelled
  nursery ends them too.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import outcome
import trio

__all__ = ["KEEP", "Job", "JoinableJob", "SpareTask", "SpareTasks"]

# Parked tasks kept for later jobs at most. A half runs two jobs per client
# connection, so 200 busy clients keep up to 400 tasks at work; what a burst
# leaves parked beyond this ends instead. A parked task holds a few KiB, so all of
# them together stay small next to a half's resident memory.
KEEP = 256


@dataclass(frozen=True)
class SpareTask:
    """What a job is told of the task it runs in."""

    tasks: "SpareTasks"  # where to start a job beside it
    cancel_scope: trio.CancelScope  # cancelling it ends the job and the task


Job = Callable[[SpareTask], Awaitable[None]]


class SpareTasks:
    """Run jobs in tasks of `nursery`, keeping up to `keep` finished tasks for the next jobs."""

    def __init__(self, nursery: trio.Nursery, *, keep: int = KEEP) -> None:
        self._nursery = nursery
        self._keep = keep
        self._parked: list[trio.lowlevel.Task] = []
        self._closed = False

    def run_soon(self, job: Job) -> None:
        """Run `job` in a parked task, or in a new one when none is parked."""
        if self._parked:
            trio.lowlevel.reschedule(self._parked.pop(), outcome.Value(job))
        else:
            self._nursery.start_soon(self._run_jobs, job)

    def close(self) -> None:
        """Park no more tasks, and end the parked ones; running jobs go on."""
        self._closed = True
        while self._parked:
            trio.lowlevel.reschedule(self._parked.pop(), outcome.Value(None))

    async def _run_jobs(self, job: Job | None) -> None:
        task = trio.lowlevel.current_task()

        def unpark(_: object) -> trio.lowlevel.Abort:  # the nursery was cancelled
            self._parked.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        with trio.CancelScope() as scope:
            here = SpareTask(self, scope)
            while job is not None:
                await job(here)
                job = None  # what it held (closed streams, a session) goes now, not at the next job
                if scope.cancel_called or self._closed or len(self._parked) >= self._keep:
                    return
                self._parked.append(task)
                job = await trio.lowlevel.wait_task_rescheduled(unpark)


class JoinableJob:
    """A job that another task can wait for (`join`) and end early (`end`)."""

    def __init__(self, work: Callable[[], Awaitable[None]]) -> None:
        self._work = work
        self._scope: trio.CancelScope | None = None  # the running task's, once it runs
        self._ended_early = False  # `end` came before the job started
        self.done = False
        self._joiner: trio.lowlevel.Task | None = None

    async def __call__(self, here: SpareTask) -> None:
        self._scope = here.cancel_scope
        try:
            if not self._ended_early:
                await self._work()
        finally:
            self.done = True
            if self._joiner is not None:
                trio.lowlevel.reschedule(self._joiner)

    def end(self) -> None:
        """Cancel the job (its task's scope), or keep it from starting."""
        if self.done:
            return
        if self._scope is None:
            self._ended_early = True
        else:
            self._scope.cancel()

    async def join(self) -> None:
        """Wait until the job is done. If this wait is cancelled, the job is ended,
        and the cancellation is raised once it is done, as leaving a nursery does."""
        if self.done:
            return
        self._joiner = trio.lowlevel.current_task()
        cancelled = False

        def end_and_keep_waiting(_: object) -> trio.lowlevel.Abort:
            nonlocal cancelled
            cancelled = True
            self.end()
            return trio.lowlevel.Abort.FAILED

        await trio.lowlevel.wait_task_rescheduled(end_and_keep_waiting)
        if cancelled:
            await trio.lowlevel.checkpoint()  # raises the cancellation, now that the job is done
