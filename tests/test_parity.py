"""Drop-in parity: the same calls give the same results and errors as the stdlib."""

from __future__ import annotations

import concurrent.futures
import functools
import inspect
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import django_thread

STDLIB_EXECUTOR = concurrent.futures.ThreadPoolExecutor
OURS = django_thread.ThreadPoolExecutor
Executor = type[concurrent.futures.ThreadPoolExecutor]


def outcome(action: Callable[[], object]) -> tuple[str, object]:
    """What an action did, comparable across classes: a value, or an exception."""
    try:
        return ("returned", action())
    except BaseException as exc:
        return ("raised", (type(exc), str(exc)))


def same(scenario: Callable[[Executor], object]) -> tuple[str, object]:
    ours, stdlib = (
        outcome(lambda: scenario(OURS)),
        outcome(lambda: scenario(STDLIB_EXECUTOR)),
    )
    assert ours == stdlib
    return ours


def test_isinstance_and_subclassing() -> None:
    with OURS(1) as pool:
        assert isinstance(pool, concurrent.futures.ThreadPoolExecutor)
        assert isinstance(pool, concurrent.futures.Executor)
    assert isinstance(django_thread.Thread(), threading.Thread)

    class Counting(OURS):
        submitted = 0

        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            self.submitted += 1
            return super().submit(fn, *args, **kwargs)

    with Counting(2) as pool:
        assert list(pool.map(abs, [-1, -2, -3])) == [1, 2, 3]
    assert pool.submitted == 3


@pytest.mark.parametrize(
    ("ours", "stdlib"),
    [
        (OURS.__init__, STDLIB_EXECUTOR.__init__),
        (OURS.submit, STDLIB_EXECUTOR.submit),
        (OURS.map, STDLIB_EXECUTOR.map),
        (OURS.shutdown, STDLIB_EXECUTOR.shutdown),
        (django_thread.Thread.__init__, threading.Thread.__init__),
        (django_thread.Thread.start, threading.Thread.start),
        (django_thread.Thread.run, threading.Thread.run),
        (django_thread.Thread.join, threading.Thread.join),
    ],
    ids=lambda f: f.__qualname__,
)
def test_signatures_match_the_stdlib(ours: Any, stdlib: Any) -> None:
    ours_params = dict(inspect.signature(ours).parameters)
    stdlib_params = dict(inspect.signature(stdlib).parameters)
    # Ours may accept **kwargs to pass through what newer Pythons add.
    extra = {name: p for name, p in ours_params.items() if name not in stdlib_params}
    assert all(p.kind is inspect.Parameter.VAR_KEYWORD for p in extra.values()), extra
    for name, param in stdlib_params.items():
        theirs = ours_params[name]
        assert (theirs.kind, theirs.default) == (param.kind, param.default), name


def test_bad_input_raises_what_the_stdlib_raises() -> None:
    assert same(lambda cls: cls(max_workers=0))[0] == "raised"
    assert same(lambda cls: cls(max_workers=-1))[0] == "raised"
    assert same(lambda cls: cls(1, initializer=42))[0] == "raised"  # type: ignore[call-overload]
    assert same(lambda cls: cls(1, no_such_option=True))[0] == "raised"  # type: ignore[call-overload]

    def submit_after_shutdown(cls: Executor) -> object:
        pool = cls(1)
        pool.shutdown()
        return pool.submit(abs, 1)

    assert same(submit_after_shutdown)[0] == "raised"

    def submit_not_callable(cls: Executor) -> object:
        with cls(1) as pool:
            error = pool.submit(42).exception()  # type: ignore[arg-type]
        return (type(error), str(error))

    assert same(submit_not_callable) == (
        "returned",
        (TypeError, "'int' object is not callable"),
    )

    def submit_without_fn(cls: Executor) -> object:
        with cls(1) as pool:
            return pool.submit()  # type: ignore[call-arg]

    assert same(submit_without_fn)[0] == "raised"


def test_exceptions_propagate_unchanged() -> None:
    class CustomError(Exception):
        pass

    def fail(value: int) -> int:
        raise CustomError(value)

    def scenario(cls: Executor) -> object:
        with cls(2) as pool:
            error = pool.submit(fail, 7).exception()
            with pytest.raises(CustomError):
                list(pool.map(fail, [1]))
        return (type(error), error.args if error else None)

    assert same(scenario) == ("returned", (CustomError, (7,)))


def test_map_timeout_chunksize_and_order() -> None:
    def scenario(cls: Executor) -> object:
        gate = threading.Event()
        with cls(3) as pool:
            ordered = list(pool.map(pow, [2, 3, 4], [2, 2, 2], chunksize=5))
            stuck = pool.map(lambda _: gate.wait(5), range(2), timeout=0.05)
            try:
                next(stuck)
            except TimeoutError as exc:
                timed_out = type(exc)
            gate.set()
        return ordered, timed_out

    assert same(scenario) == ("returned", ([4, 9, 16], TimeoutError))


def test_shutdown_cancel_futures_and_kwargs() -> None:
    def scenario(cls: Executor) -> object:
        gate = threading.Event()
        pool = cls(1)
        running = pool.submit(gate.wait, 5)
        queued = [pool.submit(time.sleep, 0) for _ in range(5)]
        threading.Timer(0.1, gate.set).start()
        pool.shutdown(wait=True, cancel_futures=True)
        return running.result(), [f.cancelled() for f in queued]

    assert same(scenario) == ("returned", (True, [True] * 5))

    def keyword_arguments(cls: Executor) -> object:
        with cls(1) as pool:
            return pool.submit(int, "ff", base=16).result()

    assert same(keyword_arguments) == ("returned", 255)


def test_thread_names_follow_thread_name_prefix() -> None:
    def scenario(cls: Executor) -> object:
        with cls(2, thread_name_prefix="reports") as pool:
            names = set(pool.map(lambda _: threading.current_thread().name, range(20)))
        return sorted({name.rsplit("_", 1)[0] for name in names})

    assert same(scenario) == ("returned", ["reports"])


def test_worker_queue_hook_is_in_place() -> None:
    # ThreadPoolExecutor tidies from the private work queue the stdlib's workers read;
    # the canary below checks that the stdlib still reads it the way we rely on.
    pool = OURS(1)
    try:
        assert type(pool._work_queue).__name__ == "_WorkerQueue"
    finally:
        pool.shutdown()


class _RecordingQueue(queue.SimpleQueue[Any]):
    """A work queue that records which thread reads it, when, and what it got."""

    def __init__(self, events: list[tuple[str, object, int]]) -> None:
        self.events = events

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        item = super().get(block, timeout)
        self.events.append(("read", item is None, threading.get_ident()))
        return item

    def get_nowait(self) -> Any:
        try:
            item = super().get_nowait()
        except queue.Empty:
            self.events.append(("read", "empty", threading.get_ident()))
            raise
        self.events.append(("read", item is None, threading.get_ident()))
        return item


def test_stdlib_worker_loop_reads_the_queue_in_the_worker() -> None:
    """The canary for the one stdlib detail django_thread.ThreadPoolExecutor relies on.

    A plain stdlib pool with its work queue swapped (as ours does) for one that records
    its readers. The worker must: run the initializer in its own thread before it first
    reads; read each work item itself before running it; come back to the queue itself
    only once the task is over (its future done, the done-callbacks that run in the
    worker run); and end when it reads None. If this fails on a new Python, the
    executor's tidying in _WorkerQueue is in the wrong place: see _executor.py.
    """
    events: list[tuple[str, object, int]] = []

    def record(what: str, label: object) -> None:
        events.append((what, label, threading.get_ident()))

    def task(number: int, gate: threading.Event) -> None:
        gate.wait(5)
        record("task", number)

    pool = STDLIB_EXECUTOR(1, initializer=record, initargs=("initializer", None))
    pool._work_queue = _RecordingQueue(events)
    tasks = 5
    for number in range(tasks):
        gate = threading.Event()
        future = pool.submit(task, number, gate)
        # Registered while the task waits, so it runs in the worker as the task ends.
        future.add_done_callback(functools.partial(lambda n, _: record("callback", n), number))
        gate.set()
        future.result(timeout=5)
    [worker] = pool._threads
    pool.shutdown(wait=True)

    assert worker.ident is not None
    main = threading.get_ident()
    assert worker.ident != main
    assert not worker.is_alive()
    assert events[0] == ("initializer", None, worker.ident), events[:2]
    # Every read of the queue is the worker's: submit() and shutdown() never read it.
    readers = {thread for what, _, thread in events if what == "read"}
    assert readers == {worker.ident}, events
    for number in range(tasks):
        start = events.index(("task", number, worker.ident))
        end = events.index(("callback", number, worker.ident))
        # Just before the task: the worker read a work item (not None, not empty).
        assert events[start - 1] == ("read", False, worker.ident), events[start - 2 : start + 1]
        # The task, then its done-callback, then the worker's next read, nothing between.
        assert end == start + 1, events[start : end + 1]
        assert events[end + 1][0] == "read", events[end : end + 2]
    # The last thing the worker did: read None, the exit sentinel, and end.
    assert events[-1] == ("read", True, worker.ident), events[-3:]
