"""django_thread.Thread: one unit of work per run(), everything closed at exit."""

from __future__ import annotations

import logging
import re
import threading
import warnings
from typing import Any

import pytest
from django.db import (
    DatabaseError,
    close_old_connections,
    connection,
    connections,
    transaction,
)
from django.db.backends.base.base import BaseDatabaseWrapper

from django_thread import Thread
from tests.conftest import settle
from tests.server import ServerProbe
from tests.testapp.models import Note
from tests.work import query

pytestmark = pytest.mark.django_db(transaction=True)


def run_threads(cls: type[threading.Thread], count: int) -> None:
    threads = [cls(target=query) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.mark.usefixtures("conn_policy", "no_gc")
def test_fifty_threads_leave_no_connection_behind(probe: ServerProbe) -> None:
    baseline = probe.steady()

    run_threads(Thread, 50)

    assert settle(probe, baseline) == baseline


@pytest.mark.usefixtures("conn_policy", "no_gc")
def test_fifty_stdlib_threads_leave_connections_until_gc(probe: ServerProbe) -> None:
    # The same workload with threading.Thread: nothing closes the connections, and
    # the dead threads' connection objects live on in reference cycles.
    baseline = probe.steady()

    run_threads(threading.Thread, 50)

    assert settle(probe, baseline, timeout=1.0) == baseline + 50
    with warnings.catch_warnings():  # drivers warn about sockets closed by GC
        warnings.simplefilter("ignore", ResourceWarning)
        import gc  # noqa: PLC0415

        gc.collect()
    assert settle(probe, baseline) == baseline


@pytest.mark.usefixtures("no_gc")
@pytest.mark.parametrize(
    ("cls", "left"), [(Thread, 0), (threading.Thread, 1)], ids=["django_thread", "stdlib"]
)
def test_unregistered_wrappers_are_closed_too(
    conn_settings: Any, probe: ServerProbe, cls: type[threading.Thread], left: int
) -> None:
    # Some multi-tenant code builds wrappers with connections.create_connection()
    # and never registers them; connections.all() cannot see those, but they still
    # announce themselves with connection_created when they connect.
    conn_settings(max_age=None)
    baseline = probe.steady()
    wrappers: list[BaseDatabaseWrapper] = []

    def tenant_query() -> None:
        wrapper = connections.create_connection("default")
        wrappers.append(wrapper)
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT 1")

    thread = cls(target=tenant_query)
    thread.start()
    thread.join()

    assert settle(probe, baseline + left, timeout=1.0) == baseline + left
    wrapper = wrappers[0]
    assert (wrapper.connection is None) is (left == 0)
    if wrapper.connection is not None:  # the stdlib's: nothing else closes it before gc
        wrapper.inc_thread_sharing()
        wrapper.close()
    assert settle(probe, baseline) == baseline


def test_subclass_overriding_run_is_managed(conn_settings: Any, probe: ServerProbe) -> None:
    conn_settings(max_age=None)
    baseline = probe.steady()
    results: list[int] = []

    class Worker(Thread):
        def run(self) -> None:
            Note.objects.create(text="from a subclass")
            results.append(Note.objects.count())

    worker = Worker()
    worker.start()
    worker.join()

    assert results == [1]
    assert settle(probe, baseline) == baseline
    assert "run" not in vars(worker), "the per-start wrapper must not outlive the thread"


def test_run_called_directly_runs_in_caller_and_manages_nothing(
    conn_settings: Any,
) -> None:
    conn_settings(max_age=0)  # so any cleanup in the caller would close its connection
    query()
    raw = connection.connection
    seen: list[str] = []

    Thread(target=lambda: seen.append(threading.current_thread().name)).run()

    assert seen == [threading.current_thread().name]
    assert connection.connection is raw


@pytest.mark.parametrize("max_age", [0, None])
def test_start_inside_atomic_keeps_the_parents_writes(
    conn_settings: Any, max_age: int | None
) -> None:
    conn_settings(max_age=max_age)
    with transaction.atomic():
        Note.objects.create(text="parent before")
        thread = Thread(target=query)
        thread.start()
        thread.join()
        Note.objects.create(text="parent after")

    assert sorted(Note.objects.values_list("text", flat=True)) == [
        "parent after",
        "parent before",
    ]


def test_cleaning_up_in_the_caller_inside_atomic_loses_its_writes(
    conn_settings: Any,
) -> None:
    # What django-thread 0.0.1's start() did: close_old_connections() in the caller.
    # Inside atomic() it closes the caller's connection and Django silently drops the
    # transaction. This is the failure the test above guards against.
    conn_settings(max_age=0)
    with transaction.atomic():
        Note.objects.create(text="parent")
        close_old_connections()

    assert not Note.objects.filter(text="parent").exists()


def test_exception_reaches_excepthook_and_connections_close(
    conn_settings: Any, probe: ServerProbe, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_settings(max_age=None)
    baseline = probe.steady()
    hooked: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", hooked.append)

    def fail() -> None:
        query()
        raise ValueError("boom")

    thread = Thread(target=fail, name="failing")
    thread.start()
    thread.join()

    assert [(type(h.exc_value), str(h.exc_value), h.thread) for h in hooked] == [
        (ValueError, "boom", thread)
    ]
    assert settle(probe, baseline) == baseline


def test_cleanup_failure_is_logged_and_does_not_replace_the_exception(
    conn_settings: Any,
    probe: ServerProbe,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    conn_settings(max_age=None)
    baseline = probe.steady()
    real_close = BaseDatabaseWrapper.close

    def close_then_fail(self: BaseDatabaseWrapper) -> None:
        real_close(self)
        if threading.current_thread().name == "worker":
            raise DatabaseError("injected failure while closing")

    monkeypatch.setattr(BaseDatabaseWrapper, "close", close_then_fail)
    hooked: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", hooked.append)

    def fail() -> None:
        query()
        raise ValueError("the unit's own error")

    with caplog.at_level(logging.ERROR, logger="django_thread"):
        thread = Thread(target=fail, name="worker")
        thread.start()
        thread.join()

    assert [str(h.exc_value) for h in hooked] == ["the unit's own error"]
    assert "closing database connection 'default' failed" in caplog.text
    assert "injected failure while closing" in caplog.text
    assert settle(probe, baseline) == baseline


def test_drop_in_names_daemon_and_errors() -> None:
    def noop() -> None:
        pass

    ours = Thread(target=noop, name="named", daemon=True)
    assert isinstance(ours, threading.Thread)
    assert (ours.name, ours.daemon) == ("named", True)

    # Default names follow the stdlib's "Thread-N (target)" pattern.
    assert re.fullmatch(r"Thread-\d+ \(noop\)", Thread(target=noop).name)

    ours.start()
    ours.join()
    stdlib = threading.Thread(target=noop)
    stdlib.start()
    stdlib.join()
    errors = []
    for started in (ours, stdlib):
        with pytest.raises(RuntimeError) as info:
            started.start()
        errors.append(str(info.value))
    assert errors == ["threads can only be started once"] * 2

    class NoInit(Thread):
        def __init__(self) -> None:
            pass

    with pytest.raises(RuntimeError, match=r"thread.__init__\(\) not called"):
        NoInit().start()


def test_thread_sees_committed_data_and_its_writes_persist(conn_settings: Any) -> None:
    conn_settings(max_age=60, health_checks=True)
    Note.objects.create(text="seed")
    seen: list[int] = []

    def work() -> None:
        seen.append(Note.objects.count())
        Note.objects.create(text="from thread")

    thread = Thread(target=work)
    thread.start()
    thread.join()

    assert seen == [1]
    assert Note.objects.count() == 2


def test_a_thread_that_never_connects_makes_no_record() -> None:
    # The cheap path: no record, no thread-exit hook, nothing to close.
    from django_thread import _connections  # noqa: PLC0415

    seen: list[object] = []

    def look() -> None:
        seen.append(_connections.current_record())

    def connect() -> None:
        query()
        seen.append(_connections.current_record())

    for target in (look, connect):
        thread = Thread(target=target)
        thread.start()
        thread.join()
    no_record, made_at_connect = seen
    assert no_record is None
    assert isinstance(made_at_connect, _connections._ThreadRecord)
    assert made_at_connect.managed


@pytest.mark.parametrize("aliases", [[], ["default"], ["default", "other"]])
def test_registered_wrappers_lists_what_django_lists(aliases: list[str]) -> None:
    # Canary for the asgiref detail our thread-end sweep reads directly: on every
    # Python and Django in CI, it must list what Django's public call lists, and take
    # the fast path (a threading.local), else short threads get slower unnoticed.
    from django_thread import _connections  # noqa: PLC0415

    got: list[tuple[list[str], list[str], bool]] = []

    def compare() -> None:
        for alias in aliases:
            connections[alias]  # makes the wrapper, as any use does
        storage = connections._connections._storage  # type: ignore[attr-defined]
        got.append(
            (
                sorted(conn.alias for conn in _connections.registered_wrappers()),
                sorted(conn.alias for conn in connections.all(initialized_only=True)),
                type(storage) is threading.local,
            )
        )

    thread = threading.Thread(target=compare)
    thread.start()
    thread.join()
    ours, django, fast = got[0]
    assert ours == django == sorted(aliases)
    assert fast


@pytest.mark.parametrize(("max_age", "advised"), [(0, 1), (None, 0)])
def test_a_threads_loop_connecting_per_unit_is_pointed_out(
    conn_settings: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    max_age: int | None,
    advised: int,
) -> None:
    # The thread is marked as ours although its record is made only at its first
    # connect: the CONN_MAX_AGE = 0 advice still reaches its units.
    from django_thread import unit_of_work  # noqa: PLC0415

    monkeypatch.setattr("django_thread._connections._advised", set())
    conn_settings(max_age=max_age)

    def loop() -> None:
        for _ in range(3):
            with unit_of_work():
                query()

    with caplog.at_level(logging.WARNING, logger="django_thread"):
        thread = Thread(target=loop)
        thread.start()
        thread.join()
    assert caplog.text.count("has CONN_MAX_AGE = 0, so every unit of work") == advised


def test_units_inside_run_are_outer_units(conn_settings: Any) -> None:
    # run() is the thread's whole life, not a unit: a unit_of_work inside it acts, as
    # in any thread, so a long-running loop's passes are each tidied.
    from django_thread import unit_of_work  # noqa: PLC0415

    conn_settings(max_age=0)
    seen: list[tuple[bool, bool]] = []

    def loop() -> None:
        for _ in range(3):
            with unit_of_work():
                query()
                during = connection.connection is not None
            seen.append((during, connection.connection is None))

    thread = Thread(target=loop)
    thread.start()
    thread.join()
    assert seen == [(True, True)] * 3


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
@pytest.mark.parametrize("failing", ["default", "other"])
def test_one_alias_failing_to_close_does_not_stop_the_others(
    conn_settings: Any,
    probe: ServerProbe,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    failing: str,
) -> None:
    # The injected failure comes after the real close, on one alias only; the other
    # must be closed all the same, whichever the thread closes first.
    from tests.server import probe_for  # noqa: PLC0415

    conn_settings(max_age=None)
    other = probe_for("other")
    baselines = (probe.steady(), other.steady())
    real_close = BaseDatabaseWrapper.close
    wrappers: list[BaseDatabaseWrapper] = []

    def close_then_fail(self: BaseDatabaseWrapper) -> None:
        real_close(self)
        if threading.current_thread().name == "two aliases" and self.alias == failing:
            raise DatabaseError(f"injected failure while closing {failing!r}")

    def both() -> None:
        query()
        Note.objects.using("other").count()
        wrappers.extend([connections["default"], connections["other"]])

    monkeypatch.setattr(BaseDatabaseWrapper, "close", close_then_fail)
    with caplog.at_level(logging.ERROR, logger="django_thread"):
        thread = Thread(target=both, name="two aliases")
        thread.start()
        thread.join()
    monkeypatch.undo()

    assert f"injected failure while closing {failing!r}" in caplog.text
    assert [w.connection is None for w in wrappers] == [True, True]
    assert (settle(probe, baselines[0]), settle(other, baselines[1])) == baselines
    other.close()
