"""No reference to a user's objects outlives their unit of work.

The stdlib's worker deletes each work item as soon as it ran (GH-60488), so that a
task's function, arguments, result and future are freed once the caller drops them,
even while that worker sits idle. Ours must too: an idle worker that last ran a task
over a large object must not keep it. Each test drops the object and waits for its
weakref callback, without gc.collect(): reference counting alone must free it.
"""

from __future__ import annotations

import concurrent.futures
import threading
import weakref
from collections.abc import Callable
from typing import Any

import django
import pytest

from django_thread import Thread, ThreadPoolExecutor, unit_of_work
from tests.work import query

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_gc")]

# How long the worker has to let go once the unit ended: it does at once, or never.
FREED_WITHIN = 5.0


class Payload:
    """A stand-in for a large object handed to a task."""

    def __init__(self, touch_db: bool) -> None:
        self.touch_db = touch_db

    def method(self) -> list[int]:
        return work(self)


def work(payload: Payload) -> list[int]:
    # A result of its own, so that the future's result does not pin the payload.
    return [query()] if payload.touch_db else [0]


def watch(obj: object) -> tuple[threading.Event, weakref.ref[Any]]:
    freed = threading.Event()
    return freed, weakref.ref(obj, lambda _: freed.set())


TOUCH_DB = pytest.mark.parametrize("touch_db", [False, True], ids=["no query", "a query"])
EXECUTORS = pytest.mark.parametrize(
    "executor",
    [concurrent.futures.ThreadPoolExecutor, ThreadPoolExecutor],
    ids=["stdlib", "ours"],
)


@TOUCH_DB
@EXECUTORS
def test_submit_drops_the_task_once_it_ran(
    executor: type[concurrent.futures.ThreadPoolExecutor], touch_db: bool
) -> None:
    with executor(max_workers=1) as pool:
        payload = Payload(touch_db)
        freed, _ = watch(payload)
        future = pool.submit(payload.method)
        assert future.result() in ([0], [query()])
        del payload, future

        # The worker is idle now, waiting for a next task that does not come.
        assert freed.wait(FREED_WITHIN), "the idle worker keeps the last task's argument"


@TOUCH_DB
@EXECUTORS
def test_map_drops_the_task_once_it_ran(
    executor: type[concurrent.futures.ThreadPoolExecutor], touch_db: bool
) -> None:
    with executor(max_workers=1) as pool:
        payload = Payload(touch_db)
        freed, _ = watch(payload)
        assert len(list(pool.map(work, [payload]))) == 1
        del payload

        assert freed.wait(FREED_WITHIN), "the idle worker keeps the last task's argument"


@EXECUTORS
def test_a_result_the_caller_dropped_is_freed(
    executor: type[concurrent.futures.ThreadPoolExecutor],
) -> None:
    class Result(list[int]):
        pass

    def make() -> Result:
        query()
        return Result([1])

    with executor(max_workers=1) as pool:
        future = pool.submit(make)
        result = future.result()
        freed, _ = watch(result)
        del result, future

        assert freed.wait(FREED_WITHIN), "the idle worker keeps the last task's result"


@TOUCH_DB
def test_a_thread_drops_its_arguments_once_run_ended(touch_db: bool) -> None:
    payload = Payload(touch_db)
    freed, _ = watch(payload)
    thread = Thread(target=work, args=(payload,))
    thread.start()
    thread.join()
    del payload

    assert freed.wait(FREED_WITHIN), "the ended thread keeps its target's argument"
    assert thread.ident is not None  # the Thread object itself is still held


@TOUCH_DB
def test_a_unit_of_work_drops_its_arguments_when_it_ends(touch_db: bool) -> None:
    decorated: Callable[[Payload], list[int]] = unit_of_work(work)
    done, leave = threading.Event(), threading.Event()
    freed_box: list[threading.Event] = []

    def long_lived_thread() -> None:
        payload = Payload(touch_db)
        freed, _ = watch(payload)
        freed_box.append(freed)
        decorated(payload)
        del payload
        done.set()
        leave.wait(FREED_WITHIN * 2)  # the thread, and its record, stay alive

    thread = threading.Thread(target=long_lived_thread)
    thread.start()
    try:
        assert done.wait(FREED_WITHIN)
        assert freed_box[0].wait(FREED_WITHIN), "the thread keeps the unit's argument"
    finally:
        leave.set()
        thread.join()


class Tracked(dict[str, int]):
    """A task's raw return value, which the backend stores normalized as a plain dict."""


RETURNED: list[tuple[threading.Event, weakref.ref[Any]]] = []


def make_tracked() -> Tracked:
    value = Tracked(rows=query())
    RETURNED.append(watch(value))
    return value


@pytest.mark.skipif(django.VERSION < (6, 0), reason="django.tasks is Django 6.0+")
def test_a_django_task_keeps_nothing_of_its_run(settings: Any) -> None:
    from django.tasks import TaskResultStatus, task, task_backends  # noqa: PLC0415

    settings.TASKS = {"default": {"BACKEND": "django_thread.tasks.ThreadPoolBackend"}}
    RETURNED.clear()
    backend = task_backends["default"]
    try:
        result = task(make_tracked).enqueue()
        for _ in range(500):
            result.refresh()
            if result.is_finished:
                break
            threading.Event().wait(0.01)
        assert result.status == TaskResultStatus.SUCCESSFUL
        assert result.return_value == {"rows": 0}
        [(freed, _)] = RETURNED
        assert freed.wait(FREED_WITHIN), "the idle worker keeps the task's raw return value"
    finally:
        backend.shutdown()  # type: ignore[attr-defined]
