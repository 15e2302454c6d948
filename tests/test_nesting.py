"""Units nest, and never lose a transaction: the rules for every unit of work.

Only the outermost unit in a thread tidies; a unit inside a request, a pool task or
another unit changes nothing. A unit never touches a transaction it did not open, and
one it opened and left open is rolled back and closed, loudly.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext, override_settings

from django_thread import Thread, ThreadPoolExecutor, unit_of_work
from tests.testapp.models import Note
from tests.work import QUEUED, in_turn, query

pytestmark = pytest.mark.django_db(transaction=True)


@unit_of_work
def add(text: str) -> None:
    Note.objects.create(text=text)


def texts() -> list[str]:
    return sorted(Note.objects.values_list("text", flat=True))


@contextmanager
def manual_transaction() -> Iterator[None]:
    transaction.set_autocommit(False)
    try:
        yield
        transaction.commit()
    finally:
        transaction.set_autocommit(True)


def add_two_in_a_manual_transaction() -> list[str]:
    with manual_transaction():
        Note.objects.create(text="one")  # the caller's own write comes first
        add("two")
    return texts()


@pytest.mark.parametrize("where", ["main thread", "pool task"])
def test_a_unit_inside_the_callers_manual_transaction_keeps_it(
    conn_settings: Any, where: str
) -> None:
    conn_settings(max_age=0)
    if where == "pool task":
        with ThreadPoolExecutor(1) as pool:
            seen = pool.submit(add_two_in_a_manual_transaction).result()
    else:
        seen = add_two_in_a_manual_transaction()
    assert seen == ["one", "two"]
    assert texts() == ["one", "two"]


def test_a_unit_inside_a_manual_transaction_that_rolls_back_commits_nothing(
    conn_settings: Any,
) -> None:
    conn_settings(max_age=0)
    transaction.set_autocommit(False)
    try:
        add("one")
        add("two")
        transaction.rollback()
    finally:
        transaction.set_autocommit(True)
    assert texts() == []


def test_an_inline_unit_keeps_the_callers_captured_queries(conn_settings: Any) -> None:
    conn_settings(max_age=None)
    with CaptureQueriesContext(connection) as captured:
        query()
        unit_of_work(query)()
        query()
    assert len(captured) == 3


@pytest.mark.parametrize("max_age", [0, None])
def test_an_inner_unit_keeps_the_callers_query_log(conn_settings: Any, max_age: int) -> None:
    # DEBUG's query log, not captured: an outer unit clears it as it begins, an inner
    # one (here inside a pool task) leaves it, and the task's connection, alone.
    conn_settings(max_age=max_age)

    def task() -> tuple[int, int, bool]:
        query()
        raw = connection.connection
        before = len(connection.queries)
        unit_of_work(query)()
        return before, len(connection.queries), connection.connection is raw

    with override_settings(DEBUG=True), ThreadPoolExecutor(1) as pool:
        before, after, same = pool.submit(task).result()
    assert before >= 1
    assert after == before + 1
    assert same


@pytest.mark.parametrize("max_age", [0, None])
def test_a_unit_inside_a_view_leaves_the_request_alone(conn_settings: Any, max_age: int) -> None:
    # The view iterates a queryset with a cursor open and calls a decorated helper
    # per row: an inner unit that closed the connection would break the iteration.
    conn_settings(max_age=max_age)
    Note.objects.bulk_create(Note(text=f"n{i}") for i in range(5))
    with override_settings(ROOT_URLCONF="tests.testapp.urls"):
        response = Client().get("/notes/")
    assert response.status_code == 200
    assert response.content.decode().splitlines() == [f"n{i} (1)" for i in range(5)]


@pytest.mark.parametrize("max_age", [0, None])
def test_a_unit_inside_a_pool_task_leaves_the_task_alone(conn_settings: Any, max_age: int) -> None:
    conn_settings(max_age=max_age)
    Note.objects.bulk_create(Note(text=f"n{i}") for i in range(5))

    @unit_of_work
    def count(text: str) -> int:
        return Note.objects.filter(text=text).count()

    def task() -> tuple[list[int], int]:
        with CaptureQueriesContext(connection) as captured:
            counts = [count(n.text) for n in Note.objects.order_by("pk").iterator(chunk_size=2)]
        return counts, len(captured)

    with ThreadPoolExecutor(1) as pool:
        counts, captured = pool.submit(task).result()
    assert counts == [1] * 5
    assert captured >= 6  # the iteration's queries and the helper's five


def test_bare_decorator() -> None:
    @unit_of_work
    def double(value: int) -> int:
        """Doubles."""
        return value * 2

    assert double(21) == 42
    assert double.__name__ == "double"
    assert double.__doc__ == "Doubles."
    with pytest.raises(TypeError, match="takes a function to decorate, not int"):
        unit_of_work(42)  # type: ignore[call-overload]


def test_coroutine_functions_are_refused_with_what_to_do() -> None:
    async def handler() -> None:
        pass

    with pytest.raises(TypeError, match="Decorate the synchronous function"):
        unit_of_work(handler)


# --- transactions left open --------------------------------------------------------


def leave_atomic_open() -> None:
    transaction.atomic().__enter__()
    Note.objects.create(text="abandoned")


def leave_autocommit_off() -> None:
    transaction.set_autocommit(False)
    Note.objects.create(text="abandoned")


@QUEUED
@pytest.mark.parametrize("leave_open", [leave_atomic_open, leave_autocommit_off])
def test_a_task_that_leaves_a_transaction_open_does_not_swallow_the_next(
    conn_settings: Any, caplog: pytest.LogCaptureFixture, leave_open: Any, queued: bool
) -> None:
    conn_settings(max_age=None)
    with ThreadPoolExecutor(1) as pool:
        for future in in_turn(pool, [leave_open, functools.partial(add, "next")], queued=queued):
            future.result()
    assert texts() == ["next"]
    [error] = [r for r in caplog.records if r.name == "django_thread"]
    assert error.levelno == logging.ERROR
    assert f"{leave_open.__name__}()" in error.getMessage()
    assert "rolled back" in error.getMessage()


@pytest.mark.parametrize("leave_open", [leave_atomic_open, leave_autocommit_off])
def test_an_outer_unit_that_leaves_a_transaction_open_is_rolled_back(
    conn_settings: Any, caplog: pytest.LogCaptureFixture, leave_open: Any
) -> None:
    conn_settings(max_age=None)
    unit_of_work(leave_open)()
    assert connection.connection is None  # closed, though CONN_MAX_AGE would keep it
    add("next")
    assert texts() == ["next"]
    assert not connection.in_atomic_block
    assert connection.get_autocommit()
    [error] = [r for r in caplog.records if r.name == "django_thread"]
    assert f"tests.test_nesting.{leave_open.__name__}()" in error.getMessage()


def test_a_thread_that_ends_inside_a_transaction_says_so(
    conn_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    conn_settings(max_age=None)
    thread = Thread(target=leave_atomic_open)
    thread.start()
    thread.join()
    assert texts() == []
    said = [r for r in caplog.records if "a thread ended with a transaction open" in r.getMessage()]
    assert [r.levelname for r in said] == ["ERROR"]


# --- our own classes' corners ------------------------------------------------------


@pytest.mark.parametrize("manual", [False, True], ids=["atomic", "set_autocommit"])
def test_a_task_that_shuts_its_own_pool_down_keeps_its_transaction(
    conn_settings: Any, manual: bool
) -> None:
    # shutdown(cancel_futures=True) drains the queue in the calling thread, here a
    # worker in the middle of a task; with a shutdown() already under way the drain
    # also takes the exit sentinel.
    conn_settings(max_age=0)
    pool = ThreadPoolExecutor(1)
    queued = threading.Event()

    def task() -> str:
        queued.wait(10)
        block = manual_transaction() if manual else transaction.atomic()
        with block:
            Note.objects.create(text="before")
            pool.shutdown(wait=False, cancel_futures=True)
            Note.objects.create(text="after")
        return "done"

    first = pool.submit(task)
    pending = [pool.submit(query) for _ in range(3)]
    pool.shutdown(wait=False)
    queued.set()
    assert first.result(timeout=10) == "done"
    pool.shutdown(wait=True)
    assert all(f.cancelled() for f in pending)
    assert texts() == ["after", "before"]


def test_run_called_directly_while_the_thread_runs_manages_nothing(conn_settings: Any) -> None:
    conn_settings(max_age=0)
    release = threading.Event()

    class Waiter(Thread):
        def run(self) -> None:
            if threading.current_thread() is self:
                release.wait(10)

    thread = Waiter()
    thread.start()
    try:
        with transaction.atomic():
            Note.objects.create(text="one")
            thread.run()  # in this thread, while the thread itself runs
            Note.objects.create(text="two")
    finally:
        release.set()
        thread.join()
    assert texts() == ["one", "two"]


def test_replacing_the_work_queue_is_refused_with_what_to_do() -> None:
    class BoundedExecutor(ThreadPoolExecutor):
        def __init__(self, max_workers: int, maxsize: int) -> None:
            super().__init__(max_workers)
            self._work_queue = queue.Queue(maxsize)  # type: ignore[assignment]

    with pytest.raises(TypeError, match="BoundedSemaphore around submit"):
        BoundedExecutor(2, maxsize=4)
