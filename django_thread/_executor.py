from __future__ import annotations

import concurrent.futures
import functools
import queue
from collections.abc import Callable
from typing import Any, TypeVarTuple, Unpack, overload

from django_thread._connections import (
    _registry,
    _ThreadRecord,
    begin_shared,
    begin_unit,
    between_units,
    close_half_open,
    close_thread_connections,
    current_record,
    end_shared,
    end_unit,
    mark_managed,
    record,
    sharing,
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
        work_queue = _WorkerQueue()
        if initializer is None or callable(initializer):  # else: the stdlib's TypeError
            initializer = functools.partial(_start_worker, work_queue, initializer)
        super().__init__(max_workers, thread_name_prefix, initializer, initargs, **ctxkwargs)
        # The one private detail we rely on; see _WorkerQueue. The queue is made in
        # __init__ and first used by the first submit(), so swapping it now is safe.
        # tests/test_parity.py checks the stdlib still works this way, on every Python.
        object.__setattr__(self, "_work_queue", work_queue)

    def __setattr__(self, name: str, value: Any) -> None:
        # A popular "bounded executor" recipe assigns its own queue.Queue(maxsize) here
        # after __init__; our workers would then never see a unit boundary, and every
        # connection policy would silently stop. Refuse it, saying what to do instead.
        if (
            name == "_work_queue"
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
        if rec is None or rec.task_queue is None:
            super().shutdown(wait, cancel_futures=cancel_futures)
            return
        task_queue, rec.task_queue = rec.task_queue, None
        try:
            super().shutdown(wait, cancel_futures=cancel_futures)
        finally:
            rec.task_queue = task_queue


def _start_worker(
    work_queue: _WorkerQueue, initializer: Callable[..., object] | None, *initargs: object
) -> None:
    """Every worker's initializer: make the thread a worker, then run the user's."""
    rec = record(new_thread=True)
    mark_managed(rec)
    rec.in_pool = True
    rec.task_queue = work_queue
    if initializer is None:
        return
    rec.item = initializer
    describe = functools.partial(_describe, initializer)
    callers = begin_unit(rec)
    shared = begin_shared(describe)
    try:
        initializer(*initargs)
    except BaseException:
        end_shared(shared)
        # The stdlib's worker returns right after a failing initializer, without
        # reading the queue again except to drain it (here, in this thread): those
        # reads are not unit boundaries. Whatever the pending futures' done-callbacks
        # open while being cancelled here is closed as the thread ends.
        rec.task_queue = None
        close_thread_connections(rec, sweep=True)
        raise
    end_shared(shared)
    end_unit(rec, describe, callers)


def _describe(task: Any) -> str:
    """Name a pool task (a stdlib work item, or the initializer) for an error message."""
    fn = getattr(task, "fn", None)  # 3.11-3.13 work items
    if fn is None:
        fn = getattr(task, "task", (task,))[0]  # 3.14+: (fn, args, kwargs)
    name = getattr(fn, "__qualname__", None)
    return f"task {getattr(fn, '__module__', '?')}.{name}()" if name else f"task {fn!r}"


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
    this queue's own worker loop (``rec.task_queue is self``) is a boundary.
    """

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        # Once per task on 3.11 (the only way its workers take work), and when a
        # worker goes idle on 3.12+.
        rec = current_record()
        if rec is None or rec.task_queue is not self:
            return _simple_get(self, block, timeout)
        _after_task(rec)  # before waiting: the previous task is over
        item = _simple_get(self, block, timeout)
        _begin_task(rec, item)
        return item

    def get_nowait(self) -> Any:
        # The busy path (3.12+), once per task. A worker with no connection open has
        # nothing to tidy: a lookup, a comparison and a store. One with connections
        # open goes from the last task's end to this one's start in one pass. (The
        # unbound SimpleQueue method saves super()'s lookup on this path.)
        item = _simple_get_nowait(self)
        rec = current_record()
        if rec is not None and rec.task_queue is self:
            if rec.wrappers and item is not None and rec.shared is None and not sharing:
                _next_task(rec, item)
            else:
                _after_task(rec)
                _begin_task(rec, item)
        return item


_simple_get = queue.SimpleQueue.get
_simple_get_nowait = queue.SimpleQueue.get_nowait


def _after_task(rec: _ThreadRecord) -> None:
    """The previous task is over: tidy after it, next to nothing if it opened nothing."""
    if rec.wrappers or rec.shared is not None:
        _end_task(rec)
    elif _registry is None or vars(_registry):  # the thread has used Django's connections
        close_half_open(rec)  # a connect of its may have failed half-way


def _end_task(rec: _ThreadRecord) -> None:
    shared, rec.shared = rec.shared, None
    end_shared(shared)
    end_unit(rec, functools.partial(_describe, rec.item))


def _next_task(rec: _ThreadRecord, task: Any) -> None:
    """Straight from one task to the next, with connections open and no test sharing."""
    between_units(rec, functools.partial(_describe, rec.item))
    rec.item = task


def _begin_task(rec: _ThreadRecord, item: Any) -> None:
    if item is None:  # the stdlib's "exit now"
        rec.item = None
        close_thread_connections(rec, sweep=True)
        return
    try:
        _begin(rec, item)
    except Exception as exc:  # no turn on the shared connection: fail the task
        _make_it_raise(item, exc)


def _begin(rec: _ThreadRecord, task: Any, *, tidy: bool = True) -> None:
    """Begin *task*'s unit of work; raises if it gets no turn on a test's connection."""
    rec.item = task
    if tidy and rec.wrappers:
        begin_unit(rec)
    if sharing:  # a test's share_connections(): decided per task, not per worker
        rec.shared = sharing[0].begin(functools.partial(_describe, task))


def next_unit(task: Callable[..., object], *, first: bool) -> None:
    """Mark, in a pool work item that runs several tasks in turn, where *task* begins.

    ``django_thread.tasks`` runs its own queue this way, and each of its tasks is a unit
    of work of its own, exactly as if the worker had taken it from the executor's queue:
    the previous task's unit ends (connections tidied, a transaction it left open
    rolled back) and *task*'s begins. *first*: the work item's own unit has only just
    begun, so there is nothing to end (and the health checks it armed stay armed); the
    unit is only named after *task*.

    Raises what keeps *task* from starting: no turn on a test's shared connection.
    """
    rec = current_record()
    if rec is None or rec.task_queue is None:
        return  # not run by a worker loop of ours (say, a queue drained in shutdown())
    if first:
        shared, rec.shared = rec.shared, None
        end_shared(shared)  # under a test's sharing: the turn is taken again, named for task
    elif rec.wrappers and rec.shared is None and not sharing:
        _next_task(rec, task)
        return
    else:
        _after_task(rec)
    _begin(rec, task, tidy=not first)


def _make_it_raise(item: Any, exc: Exception) -> None:
    """Turn a work item into one that raises *exc*, so that its future reports it.

    Raising here instead would end the stdlib's worker loop, and the future would
    never resolve.
    """

    def fail() -> None:
        raise exc

    if hasattr(item, "fn"):  # 3.11-3.13
        item.fn, item.args, item.kwargs = fail, (), {}
    else:  # 3.14+: (fn, args, kwargs), as the worker context resolved it
        item.task = (fail, (), {})
