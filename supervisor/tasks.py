"""The tasks of a daemon run: a task the daemon started and left running ends with the run.

A task starts in a copy of the context of the code that creates it. The runner starts each
run's task in a context naming the run's task set (`run_context`), and `track_tasks` installs
a task factory on the loop that adds every new task to the set its context names. So a task
the daemon started with asyncio.create_task and never awaited is known when the run ends, and
is cancelled instead of running on beside the next instance. Jobs are started `detached`: a
job may outlive the run that launched it.
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections.abc import Coroutine, Generator
from typing import Any

RunTasks = weakref.WeakSet["asyncio.Task[Any]"]

_RUN: contextvars.ContextVar[RunTasks | None] = contextvars.ContextVar("warden_run_tasks", default=None)


def run_context(tasks: RunTasks) -> contextvars.Context:
    """A context for a run's task: every task started from it is added to `tasks`."""
    context = contextvars.copy_context()
    context.run(_RUN.set, tasks)
    return context


def detached() -> contextvars.Context:
    """A copy of the current context that belongs to no run, for work meant to outlive it."""
    context = contextvars.copy_context()
    context.run(_RUN.set, None)
    return context


class _Factory:
    """The loop's task factory: makes the task as before, then files it under its run."""

    def __init__(self, previous: Any) -> None:
        self.previous = previous

    def __call__(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
        **kwargs: Any,
    ) -> asyncio.Future[Any]:
        # Every keyword goes on as given: Python 3.13.3+ passes name= and context=, 3.14 eager_start= too.
        if self.previous is None:
            task: asyncio.Future[Any] = asyncio.Task(coro, loop=loop, **kwargs)
        else:
            task = self.previous(loop, coro, **kwargs)
        context: contextvars.Context | None = kwargs.get("context")
        tasks = _RUN.get() if context is None else context.get(_RUN)
        if tasks is not None and isinstance(task, asyncio.Task):
            tasks.add(task)
        return task


def track_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """Install the factory on `loop` unless it is there already.

    It stays for the loop's life: taking it off when one Supervisor ends would end the tracking of
    another still running on the loop, and put back a factory someone may have replaced meanwhile.
    A task started in no run's context is made as before.
    """
    if not isinstance(loop.get_task_factory(), _Factory):
        loop.set_task_factory(_Factory(loop.get_task_factory()))
