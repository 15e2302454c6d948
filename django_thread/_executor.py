from __future__ import annotations

import concurrent.futures
import functools
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVarTuple, Unpack, overload

from django_thread._connections import (
    _opened,
    begin_unit,
    close_thread_connections,
    end_unit,
    mark_managed,
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
        **ctxkwargs: Any,  # 3.14+: prepare_context()'s keywords, named as the stdlib names them
    ) -> None:
        work_queue = _WorkerQueue()
        if initializer is None or callable(initializer):  # else: the stdlib's TypeError
            initializer = functools.partial(_start_worker, work_queue, initializer)
        super().__init__(max_workers, thread_name_prefix, initializer, initargs, **ctxkwargs)
        # The one private detail we rely on; see _WorkerQueue. The queue is made in
        # __init__ and first used by the first submit(), so swapping it now is safe.
        # tests/test_parity.py checks the stdlib still works this way, on every Python.
        self._work_queue: queue.SimpleQueue[Any] = work_queue


def _start_worker(
    work_queue: _WorkerQueue, initializer: Callable[..., object] | None, *initargs: object
) -> None:
    """Every worker's initializer: mark the thread as a worker, then run the user's."""
    work_queue.workers.mine = True
    mark_managed(threading.current_thread())
    if initializer is None:
        return
    begin_unit()
    try:
        initializer(*initargs)
    except BaseException:
        # The stdlib's worker returns right after a failing initializer without
        # taking anything from the queue, so this is its last chance to close.
        close_thread_connections()
        raise
    end_unit()


class _WorkerQueue(queue.SimpleQueue[Any]):
    """The executor's work queue, which marks where units of work end and begin.

    There is no public hook that runs in a pool worker between two tasks, or as it
    exits (Python 3.14 adds the latter; we support 3.11+). But every stdlib version's
    worker loop takes its next work item from this queue, in its own thread, with
    get() or (3.12+) get_nowait(), once it has finished the previous one: its future
    resolved and the done-callbacks that run in the worker run. And it is told to
    exit by taking None. So this is the one place that runs in the right thread at
    exactly the right moments:

    - when a worker comes back for more: the previous unit is over, tidy after it
      (before waiting, so a CONN_MAX_AGE = 0 connection is not held while idle);
    - when it takes a work item: a unit begins;
    - when it takes None: the worker is exiting, close everything.

    Tidying here rather than in a wrapper around each task keeps submit() the
    stdlib's own, costs next to nothing per task, and also covers connections the
    done-callbacks used. The caller's thread calls get_nowait() too, to drain the
    queue on shutdown(cancel_futures=True): only threads marked as this executor's
    workers (by their initializer, _start_worker) ever tidy anything.
    """

    def __init__(self) -> None:
        self.workers = threading.local()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        # Once per task on 3.11 (the only way its workers take work), and when a
        # worker goes idle on 3.12+. A thread with no connection open has nothing to
        # tidy, begin or close, and cannot open one while it waits: two lookups.
        if not (getattr(_opened, "wrappers", None) and getattr(self.workers, "mine", False)):
            return _simple_get(self, block, timeout)
        end_unit()  # before waiting: the previous unit is over
        item = _simple_get(self, block, timeout)
        _begin_or_exit(item)
        return item

    def get_nowait(self) -> Any:
        # The busy path (3.12+), once per task: keep the common case to two lookups.
        # A thread with no connection open has nothing to tidy or close.
        item = _simple_get_nowait(self)  # not super(): this is the per-task path
        if getattr(_opened, "wrappers", None) and getattr(self.workers, "mine", False):
            end_unit()
            _begin_or_exit(item)
        return item


_simple_get = queue.SimpleQueue.get
_simple_get_nowait = queue.SimpleQueue.get_nowait


def _begin_or_exit(item: Any) -> None:
    if item is None:  # the stdlib's "exit now"
        close_thread_connections()
    else:
        begin_unit()
