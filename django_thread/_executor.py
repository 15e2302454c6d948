from __future__ import annotations

import concurrent.futures
import functools
import queue
from collections.abc import Callable
from typing import Any, TypeVarTuple, Unpack, overload

from django_thread import _compat
from django_thread._connections import (
    DRAINING,
    begin,
    current_record,
    end,
    exit_thread,
    read_settings,
    take_task,
    worker_begins,
)

Ts = TypeVarTuple("Ts")


class ThreadPoolExecutor(concurrent.futures.ThreadPoolExecutor):
    """A :class:`concurrent.futures.ThreadPoolExecutor` that looks after DB connections.

    Same constructor, methods and behaviour as the stdlib class. Each call given to
    :meth:`~concurrent.futures.Executor.submit` or
    :meth:`~concurrent.futures.Executor.map`, and the *initializer*, is one unit of
    work, tidied inside the worker thread:

    - before it, the query log is reset and obsolete or unusable connections are
      closed, honouring ``CONN_MAX_AGE`` and arming ``CONN_HEALTH_CHECKS``;
    - after it, also when it raised, and after its future's done-callbacks that ran
      in the worker, obsolete or unusable connections are closed again, before the
      worker waits for more work. Connections inside an atomic block are never
      closed.

    When a worker ends (:meth:`~concurrent.futures.Executor.shutdown`, the executor
    being garbage collected, the interpreter exiting, or its *initializer* raising),
    it closes every connection it opened, so that once ``shutdown(wait=True)``
    returns the database server no longer sees them.

    Nothing runs in the caller's thread: ``submit()``, ``map()`` and ``shutdown()``
    leave the caller's connections alone.
    """

    # The overloads mirror typeshed's for the stdlib class, so that *initargs* is
    # checked against *initializer*'s parameters just the same.
    @overload
    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable[[], object] | None = None,
        initargs: tuple[()] = (),
    ) -> None: ...
    @overload
    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        *,
        initializer: Callable[[Unpack[Ts]], object],
        initargs: tuple[*Ts],
    ) -> None: ...
    @overload
    def __init__(
        self,
        max_workers: int | None,
        thread_name_prefix: str,
        initializer: Callable[[Unpack[Ts]], object],
        initargs: tuple[*Ts],
    ) -> None: ...
    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        **ctxkwargs: Any,  # 3.14+: prepare_context()'s keywords, named as the stdlib's
    ) -> None:
        read_settings()  # a bad DJANGO_THREAD is an error here, not in a worker
        work_queue = _WorkerQueue()
        if initializer is None or callable(initializer):  # else: the stdlib's TypeError
            initializer = functools.partial(_start_worker, work_queue, initializer)
        super().__init__(max_workers, thread_name_prefix, initializer, initargs, **ctxkwargs)
        # See _WorkerQueue: the queue is made in __init__ and first used by the first
        # submit(), so swapping it now is safe.
        object.__setattr__(self, _compat.WORK_QUEUE, work_queue)

    def __setattr__(self, name: str, value: Any) -> None:
        # A popular "bounded executor" recipe assigns its own queue.Queue(maxsize) here
        # after __init__; our workers would then never see a unit boundary, and every
        # connection policy would silently stop. Refuse it, saying what to do instead.
        if (
            name == _compat.WORK_QUEUE
            and isinstance(vars(self).get(name), _WorkerQueue)
            and not isinstance(value, _WorkerQueue)
        ):
            msg = (
                "django_thread.ThreadPoolExecutor manages its own work queue, which marks "
                "where units of work begin and end; it cannot be replaced. To bound the "
                "number of pending tasks, hold a threading.BoundedSemaphore around submit() "
                "and release it in a done-callback (see the docs' how-to on views)."
            )
            raise TypeError(msg)
        super().__setattr__(name, value)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        # shutdown(cancel_futures=True) drains the queue in the calling thread, which may
        # be a worker in the middle of a task (of this pool or another): reads made
        # while draining are not the worker loop's, and must not end the running unit.
        rec = current_record()
        if rec is None or rec.pool is None:
            super().shutdown(wait, cancel_futures=cancel_futures)
            return
        pool, rec.pool = rec.pool, DRAINING
        try:
            super().shutdown(wait, cancel_futures=cancel_futures)
        finally:
            rec.pool = pool


def _start_worker(
    work_queue: _WorkerQueue, initializer: Callable[..., object] | None, *initargs: object
) -> None:
    """Every worker's initializer: make the thread a worker, then run the user's."""
    rec = worker_begins(work_queue)
    if initializer is None:
        return
    try:
        begin(rec, initializer)
        initializer(*initargs)
    except BaseException:
        # The stdlib's worker returns right after a failing initializer, reading the
        # queue again only to drain it (here, in this thread): not unit boundaries.
        rec.pool = None
        end(rec)
        exit_thread(rec)
        raise
    end(rec)


class _WorkerQueue(queue.SimpleQueue[Any]):
    """The executor's work queue, which marks where units of work end and begin.

    There is no public hook that runs in a pool worker between two tasks, or as it
    exits, on every Python we support (3.14's ``prepare_context()`` has a per-task
    one; see the connections explanation in the docs for why we keep one mechanism).
    But every stdlib version's worker loop takes its next work item from this queue,
    in its own thread, with get() or (3.12+) get_nowait(), once it has finished the
    previous one: its future resolved and the done-callbacks that run in the worker
    run. And it is told to exit by taking None. So this is the one place that runs in
    the right thread at exactly the right moments:

    - when a worker comes back for more: the previous task is over, tidy after it
      (before waiting, so a CONN_MAX_AGE = 0 connection is not held while idle);
    - when it takes a work item: a task begins;
    - when it takes None: the worker is exiting, close everything.

    Tidying here rather than in a wrapper around each task keeps submit() the
    stdlib's own, costs next to nothing per task, and also covers connections the
    done-callbacks used. Other reads of the queue (shutdown(cancel_futures=True)
    draining it, in any thread) are told apart by the thread's record: only a read by
    this queue's own worker loop (``rec.pool is self``) is a boundary.
    """

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        # Once per task on 3.11 (the only way its workers take work), and when a
        # worker goes idle on 3.12+.
        rec = current_record()
        if rec is None or rec.pool is not self:
            return _simple_get(self, block, timeout)
        end(rec)  # before waiting: the previous task is over; let go of it
        item = _simple_get(self, block, timeout)
        take_task(rec, item, busy=False)
        return item

    def get_nowait(self) -> Any:
        # The busy path (3.12+), once per task. (The unbound SimpleQueue method saves
        # super()'s lookup on this path.)
        item = _simple_get_nowait(self)
        rec = current_record()
        if rec is not None and rec.pool is self:
            take_task(rec, item, busy=True)
        return item


_simple_get = queue.SimpleQueue.get
_simple_get_nowait = queue.SimpleQueue.get_nowait
