"""django_thread.ThreadPoolExecutor: a unit of work per task, all closed per worker."""

from __future__ import annotations

import concurrent.futures
import gc
import logging
import threading
import time
import warnings
from typing import Any

import pytest
from django.db import (
    DatabaseError,
    connection,
    connections,
    reset_queries,
    transaction,
)
from django.db.backends.base.base import BaseDatabaseWrapper
from django.test.utils import override_settings

from django_thread import Thread, ThreadPoolExecutor
from tests.conftest import settle
from tests.server import ServerProbe, probe_for
from tests.testapp.models import Note
from tests.work import QUEUED, in_turn, query, thread_name

pytestmark = pytest.mark.django_db(transaction=True)

Executor = type[concurrent.futures.ThreadPoolExecutor]


def run_pool(cls: Executor, workers: int = 8, tasks: int = 200) -> None:
    with cls(max_workers=workers) as pool:
        assert sum(pool.map(lambda _: query() + 1, range(tasks))) == tasks


@pytest.mark.usefixtures("conn_policy", "no_gc")
def test_pool_of_8_running_200_tasks_leaves_no_connection(probe: ServerProbe) -> None:
    baseline = probe.steady()

    run_pool(ThreadPoolExecutor)

    assert settle(probe, baseline) == baseline


@pytest.mark.usefixtures("conn_policy", "no_gc")
def test_stdlib_pool_leaves_its_workers_connections(probe: ServerProbe) -> None:
    baseline = probe.steady()

    run_pool(concurrent.futures.ThreadPoolExecutor)

    left = settle(probe, baseline, timeout=1.0) - baseline
    assert 1 <= left <= 8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    assert settle(probe, baseline) == baseline


def test_idle_workers_hold_only_what_conn_max_age_allows(
    conn_settings: Any, probe: ServerProbe
) -> None:
    baseline = probe.steady()
    conn_settings(max_age=0)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: query(), range(40)))
        # CONN_MAX_AGE = 0: each unit closed its connection when it finished.
        assert settle(probe, baseline) == baseline

    conn_settings(max_age=None)
    with ThreadPoolExecutor(4) as pool:
        names = set(pool.map(lambda _: (query(), thread_name())[1], range(40)))
        # Persistent: the idle workers keep theirs for the next task...
        assert settle(probe, baseline + len(names)) == baseline + len(names)
    # ...until shutdown, when every worker closes everything.
    assert settle(probe, baseline) == baseline


@pytest.mark.usefixtures("no_gc")
def test_collected_executor_closes_its_workers_connections(
    conn_settings: Any, probe: ServerProbe
) -> None:
    conn_settings(max_age=None)
    baseline = probe.steady()
    pool = ThreadPoolExecutor(2, thread_name_prefix="collected")
    pool.submit(query).result()
    workers = [t for t in threading.enumerate() if t.name.startswith("collected")]

    del pool  # no shutdown(): the stdlib's weakref callback tells the workers to exit

    for worker in workers:
        worker.join(timeout=10)
        assert not worker.is_alive()
    assert settle(probe, baseline) == baseline


@pytest.mark.parametrize("max_age", [0, None])
def test_initializer_is_a_unit_of_work(
    conn_settings: Any, probe: ServerProbe, max_age: int | None
) -> None:
    conn_settings(max_age=max_age)
    query()  # the main thread's own connection is part of the baseline
    baseline = probe.steady()
    opened: list[int] = []

    def initializer(marker: str) -> None:
        Note.objects.create(text=marker)
        opened.append(probe.count() - baseline)

    def after_init() -> tuple[bool, int]:
        # Polled: the server notices the closed socket a few milliseconds late.
        expected = baseline + (0 if max_age == 0 else 1)
        return connection.connection is not None, settle(probe, expected) - baseline

    with ThreadPoolExecutor(1, initializer=initializer, initargs=("init",)) as pool:
        still_open, on_server = pool.submit(after_init).result()

    assert opened == [1]
    # With CONN_MAX_AGE = 0 the initializer's connection was closed after it.
    assert still_open is (max_age != 0)
    assert on_server == (0 if max_age == 0 else 1)
    assert Note.objects.filter(text="init").count() == 1
    assert settle(probe, baseline) == baseline


@pytest.mark.usefixtures("no_gc")
@pytest.mark.parametrize(
    ("cls", "left"),
    [(ThreadPoolExecutor, 0), (concurrent.futures.ThreadPoolExecutor, 1)],
    ids=["django_thread", "stdlib"],
)
def test_failing_initializer_closes_the_workers_connections(
    conn_settings: Any,
    probe: ServerProbe,
    caplog: pytest.LogCaptureFixture,
    cls: Executor,
    left: int,
) -> None:
    conn_settings(max_age=None)
    baseline = probe.steady()

    def initializer() -> None:
        query()
        raise RuntimeError("initializer failed")

    with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
        pool = cls(1, initializer=initializer)
        future = pool.submit(query)
        with pytest.raises(concurrent.futures.BrokenExecutor):
            future.result()
        pool.shutdown(wait=True)

    assert "Exception in initializer" in caplog.text
    assert settle(probe, baseline, timeout=1.0 if left else 5.0) == baseline + left
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def test_submit_map_and_shutdown_inside_atomic_keep_the_parents_writes(
    conn_settings: Any,
) -> None:
    conn_settings(max_age=0)  # any cleanup in the caller would close its connection
    with transaction.atomic():
        Note.objects.create(text="parent before")
        raw = connection.connection
        with ThreadPoolExecutor(2) as pool:
            future = pool.submit(query)
            assert future.result() == 0  # the parent's row is not committed yet
            # A callback added to a done future runs right here, in the caller.
            future.add_done_callback(lambda _: None)
            assert list(pool.map(lambda _: query(), range(4))) == [0] * 4
            pool.submit(query)
        pool.shutdown(wait=True, cancel_futures=True)
        assert connection.connection is raw
        Note.objects.create(text="parent after")

    assert Note.objects.count() == 2


def dirty_unit() -> None:
    # Leaves the connection with autocommit off and an uncommitted row.
    transaction.set_autocommit(False)
    Note.objects.create(text="uncommitted")


def failed_transaction_unit() -> None:
    # Leaves the connection with autocommit off and, on PostgreSQL, an aborted
    # transaction ("current transaction is aborted, commands ignored").
    transaction.set_autocommit(False)
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM no_such_table")


def next_unit() -> tuple[bool, int]:
    return transaction.get_autocommit(), Note.objects.count()


@QUEUED
@pytest.mark.parametrize("bad_unit", [dirty_unit, failed_transaction_unit])
@pytest.mark.parametrize("max_age", [0, None])
def test_a_bad_unit_does_not_poison_the_next(
    conn_settings: Any, bad_unit: Any, max_age: int | None, queued: bool
) -> None:
    conn_settings(max_age=max_age)
    with ThreadPoolExecutor(1) as pool:
        _, following = in_turn(pool, [bad_unit, next_unit], queued=queued)
        assert following.result() == (True, 0)
    assert not Note.objects.exists()


def test_a_bad_unit_poisons_the_next_on_the_stdlib_pool(conn_settings: Any) -> None:
    conn_settings(max_age=None)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(dirty_unit).result()
        autocommit, _ = pool.submit(next_unit).result()
        pool.submit(transaction.rollback).result()
        pool.submit(transaction.set_autocommit, True).result()
        pool.submit(connections.close_all).result()
    assert autocommit is False


def test_query_log_is_reset_per_unit(conn_settings: Any) -> None:
    conn_settings(max_age=None)

    def three_queries() -> int:
        before = len(connection.queries)
        for _ in range(3):
            query()
        return before

    seen = {}
    with override_settings(DEBUG=True):
        for cls in (ThreadPoolExecutor, concurrent.futures.ThreadPoolExecutor):
            with cls(1) as pool:
                seen[cls] = [pool.submit(three_queries).result() for _ in range(2)]
                pool.submit(reset_queries).result()
                pool.submit(connections.close_all).result()

    assert seen[ThreadPoolExecutor] == [0, 0]
    # The stdlib's second task starts with the first one's queries still logged
    # (plus, on MariaDB, the statements Django runs when it connects).
    first, second = seen[concurrent.futures.ThreadPoolExecutor]
    assert (first, second >= 3) == (0, True)


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
@pytest.mark.parametrize("max_age", [0, None])
def test_every_database_alias_is_managed(
    conn_settings: Any, probe: ServerProbe, max_age: int | None
) -> None:
    conn_settings(max_age=max_age)
    other = probe_for("other")
    baselines = (probe.steady(), other.steady())

    def both() -> int:
        Note.objects.using("other").create(text="other")
        return Note.objects.count() + Note.objects.using("other").count()

    with ThreadPoolExecutor(3) as pool:
        assert sum(pool.map(lambda _: both(), range(30))) >= 30
        if max_age == 0:
            assert (
                settle(probe, baselines[0]),
                settle(other, baselines[1]),
            ) == baselines
    assert (settle(probe, baselines[0]), settle(other, baselines[1])) == baselines
    other.close()


def test_cleanup_failure_never_replaces_result_or_exception(
    conn_settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    conn_settings(max_age=0)
    real = BaseDatabaseWrapper.close_if_unusable_or_obsolete

    def check_then_fail(self: BaseDatabaseWrapper) -> None:
        real(self)
        if threading.current_thread().name.startswith("failing"):
            raise DatabaseError("injected failure while tidying")

    monkeypatch.setattr(BaseDatabaseWrapper, "close_if_unusable_or_obsolete", check_then_fail)

    def fails() -> None:
        query()
        raise KeyError("the task's own error")

    with (
        caplog.at_level(logging.ERROR, logger="django_thread"),
        ThreadPoolExecutor(1, thread_name_prefix="failing") as pool,
    ):
        assert pool.submit(lambda: query() + 41).result() == 41
        error = pool.submit(fails).exception()

    assert isinstance(error, KeyError)
    assert error.args == ("the task's own error",)
    assert caplog.text.count("injected failure while tidying") >= 2


@pytest.mark.usefixtures("no_gc")
def test_busy_worker_told_to_exit_closes_its_connections(
    conn_settings: Any, probe: ServerProbe
) -> None:
    # A worker that is still busy when shutdown() comes takes the exit sentinel with
    # get_nowait() on Python 3.12+, not get(): both paths must close.
    conn_settings(max_age=None)
    baseline = probe.steady()
    gate = threading.Event()

    def blocked() -> int:
        gate.wait(10)
        return query()

    pool = ThreadPoolExecutor(1, thread_name_prefix="busy")
    futures = [pool.submit(blocked)] + [pool.submit(query) for _ in range(5)]
    worker = next(t for t in threading.enumerate() if t.name.startswith("busy"))
    pool.shutdown(wait=False)  # the exit sentinel now waits behind the queued tasks
    gate.set()
    worker.join(timeout=10)

    assert [f.result() for f in futures] == [0] * 6
    assert settle(probe, baseline) == baseline


@pytest.mark.parametrize(("max_age", "advised"), [(0, 1), (None, 0)])
def test_connecting_per_unit_is_pointed_out_once(
    conn_settings: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    max_age: int | None,
    advised: int,
) -> None:
    monkeypatch.setattr("django_thread._connections._advised", set())
    conn_settings(max_age=max_age)
    with caplog.at_level(logging.WARNING, logger="django_thread"):
        for _ in range(2):
            with ThreadPoolExecutor(1) as pool:
                assert [pool.submit(query).result() for _ in range(3)] == [0, 0, 0]
    assert caplog.text.count("has CONN_MAX_AGE = 0, so every unit of work") == advised


@QUEUED
def test_a_connection_django_no_longer_lists_is_still_tidied(
    conn_settings: Any, queued: bool
) -> None:
    # A busy worker finds the connections to tidy in Django's registry; one that this
    # thread opened and Django stopped listing (del connections[alias], settings
    # replaced) is still the worker's to close when its unit ends.
    conn_settings(max_age=0)
    dropped: list[BaseDatabaseWrapper] = []

    def open_and_drop() -> None:
        query()
        dropped.append(connections["default"])
        del connections["default"]

    with ThreadPoolExecutor(1) as pool:
        futures = in_turn(pool, [open_and_drop, lambda: dropped[0].connection], queued=queued)
    assert futures[0].result() is None
    assert futures[1].result() is None  # closed as the first task ended


def test_the_callers_connection_is_untouched_outside_a_transaction(conn_settings: Any) -> None:
    # CONN_MAX_AGE = 0: any tidying in the caller would close its connection. Outside a
    # transaction nothing protects it but the rule that the caller's thread is not ours.
    conn_settings(max_age=0)
    query()
    raw = connection.connection
    thread = Thread(target=query)
    thread.start()
    thread.join()
    assert connection.connection is raw
    with ThreadPoolExecutor(2) as pool:
        assert pool.submit(query).result() == 0
        assert connection.connection is raw
        assert list(pool.map(lambda _: query(), range(4))) == [0] * 4
        assert connection.connection is raw
    assert connection.connection is raw  # the context manager's exit
    pool = ThreadPoolExecutor(1)
    pool.submit(query).result()
    pool.shutdown(wait=True)
    assert connection.connection is raw
    assert query() == 0  # and it still works


def test_done_callbacks_run_in_the_worker_are_tidied_with_their_task(conn_settings: Any) -> None:
    # A done-callback added while the task runs is run by the worker as the task ends;
    # the tidying comes after it, so what the callback opened is closed too, before
    # the worker waits for more work.
    conn_settings(max_age=0)
    gate = threading.Event()
    opened: list[tuple[str, BaseDatabaseWrapper]] = []

    def callback(future: concurrent.futures.Future[bool]) -> None:
        query()
        opened.append((threading.current_thread().name, connections["default"]))

    with ThreadPoolExecutor(1, thread_name_prefix="callbacks") as pool:
        future = pool.submit(gate.wait, 10)
        future.add_done_callback(callback)
        gate.set()
        assert future.result() is True
        # The worker goes idle: the callback's connection is closed (polled: the
        # worker tidies a moment after result() returned).
        deadline = time.monotonic() + 5
        while not opened or opened[0][1].connection is not None:
            assert time.monotonic() < deadline, "the idle worker kept the callback's connection"
            time.sleep(0.01)
        assert opened[0][0] == "callbacks_0"
