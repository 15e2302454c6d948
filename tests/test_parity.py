"""Drop-in parity: the same calls give the same results and errors as the stdlib."""

from __future__ import annotations

import concurrent.futures
import inspect
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
    # ThreadPoolExecutor closes a worker's connections from the private work queue
    # the stdlib uses to tell workers to exit; fail loudly if a Python moves it.
    pool = OURS(1)
    try:
        assert type(pool._work_queue).__name__ == "_WorkerQueue"
        source = inspect.getsource(concurrent.futures.thread)
        assert "work_queue.get(block=True)" in source
        assert "self._work_queue.get_nowait()" in source
    finally:
        pool.shutdown()
