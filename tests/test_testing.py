"""django_thread.testing.share_connections(): threaded code inside Django's TestCase.

Each TestCase below is run from a pytest test (with its own committed database, like
TransactionTestCase), so that what it left behind can be checked afterwards: nothing,
since the TestCase's transaction is rolled back.
"""

from __future__ import annotations

import concurrent.futures
import threading
import unittest
from typing import Any

import django
import pytest
from django.db import OperationalError, connection, transaction
from django.test import TestCase

from django_thread import Thread, ThreadPoolExecutor, unit_of_work
from django_thread.testing import SharedConnectionError, share_connections
from tests.settings import VENDOR
from tests.testapp.models import Note

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])


def create(i: int) -> int:
    return Note.objects.create(text=f"n{i}").pk


def count() -> int:
    return Note.objects.count()


def unshared_count(pool: concurrent.futures.Executor) -> int | str:
    """What a worker on its own connection sees: 0 rows, or (in-memory SQLite) a lock."""
    try:
        return pool.submit(count).result(timeout=10)
    except OperationalError as exc:
        return "locked" if "database table is locked" in str(exc) else repr(exc)


def run(case: type[unittest.TestCase], *names: str) -> None:
    """Run TestCase methods; fail with their own failures and errors."""
    result = unittest.TestResult()
    unittest.TestSuite([case(name) for name in names]).run(result)
    problems = [text for _, text in result.failures + result.errors]
    assert not problems, "\n".join(problems)
    assert result.testsRun == len(names)


@share_connections()
class PoolInATestCase(TestCase):
    __test__ = False  # run by the pytest tests below, which check what it leaves
    databases = {"default", "other"}

    def test_pool_writes_and_reads_the_tests_rows(self) -> None:
        Note.objects.create(text="from the test")
        with ThreadPoolExecutor(4) as pool:
            pks = list(pool.map(create, range(100)))
            seen = pool.submit(count).result()
        self.assertEqual(len(set(pks)), 100)
        self.assertEqual(seen, 101)
        self.assertEqual(Note.objects.count(), 101)

    def test_thread_and_outer_units_share_too(self) -> None:
        Note.objects.create(text="from the test")
        seen: list[int] = []
        thread = Thread(target=lambda: seen.append(count()))
        thread.start()
        thread.join()
        plain = threading.Thread(target=lambda: seen.append(unit_of_work(count)()))
        plain.start()
        plain.join()
        self.assertEqual(seen, [1, 1])

    def test_units_inside_a_threads_run_share_its_turn(self) -> None:
        # The documented loop: run() is one unit on the test's connection, and the
        # units inside it are inner, as inside a pool task, not waiting for its turn.
        Note.objects.create(text="from the test")
        seen: list[int] = []

        def loop() -> None:
            for _ in range(3):
                with unit_of_work():
                    seen.append(count())

        thread = Thread(target=loop)
        thread.start()
        thread.join()
        self.assertEqual(seen, [1, 1, 1])

    def test_atomic_in_a_worker_is_a_savepoint(self) -> None:
        Note.objects.create(text="test")

        def task() -> None:
            Note.objects.create(text="kept")
            try:
                with transaction.atomic():
                    Note.objects.create(text="rolled back")
                    raise ValueError
            except ValueError:
                pass

        with ThreadPoolExecutor(2) as pool:
            pool.submit(task).result()
        self.assertEqual(sorted(Note.objects.values_list("text", flat=True)), ["kept", "test"])
        self.assertTrue(connection.in_atomic_block)  # the test's own, still open

    def test_assert_num_queries_counts_the_workers_queries(self) -> None:
        with ThreadPoolExecutor(4) as pool, self.assertNumQueries(8):
            list(pool.map(lambda _: count(), range(8)))

    def test_a_write_where_the_test_holds_a_lock_completes(self) -> None:
        note = Note.objects.create(text="locked")
        Note.objects.filter(pk=note.pk).update(text="updated by the test")

        def write() -> int:
            return Note.objects.filter(pk=note.pk).update(text="updated by a worker")

        with ThreadPoolExecutor(1) as pool:
            self.assertEqual(pool.submit(write).result(timeout=10), 1)
        note.refresh_from_db()
        self.assertEqual(note.text, "updated by a worker")

    def test_every_alias_is_shared(self) -> None:
        with ThreadPoolExecutor(2) as pool:
            pool.submit(lambda: Note.objects.using("other").create(text="other")).result()
        self.assertEqual(Note.objects.using("other").count(), 1)


def test_the_test_case_sees_everything_and_leaves_nothing() -> None:
    run(
        PoolInATestCase,
        "test_pool_writes_and_reads_the_tests_rows",
        "test_thread_and_outer_units_share_too",
        "test_units_inside_a_threads_run_share_its_turn",
        "test_atomic_in_a_worker_is_a_savepoint",
        "test_assert_num_queries_counts_the_workers_queries",
        "test_a_write_where_the_test_holds_a_lock_completes",
        "test_every_alias_is_shared",
    )
    assert Note.objects.count() == 0
    assert Note.objects.using("other").count() == 0


class WithoutSharing(TestCase):
    """The same code as a new user would write it today: it cannot work."""

    __test__ = False
    blocked: list[concurrent.futures.Future[Note]] = []

    def test_workers_do_not_see_the_tests_rows(self) -> None:
        Note.objects.create(text="from the test")
        with ThreadPoolExecutor(1) as pool:
            self.assertIn(unshared_count(pool), (0, "locked"))

    def test_a_worker_waits_on_the_tests_lock(self) -> None:
        # Bounded: the worker's write waits on the test's transaction (or fails on
        # SQLite), while the test waits for the worker.
        Note.objects.create(pk=1, text="held by the test")
        pool = ThreadPoolExecutor(1)
        future = pool.submit(lambda: Note.objects.create(pk=1, text="worker"))
        pool.shutdown(wait=False)
        type(self).blocked.append(future)  # waited for once the test has rolled back
        try:
            future.result(timeout=2)
        except concurrent.futures.TimeoutError:
            pass  # blocked until the test's rollback
        except Exception as exc:  # in-memory SQLite: "database table is locked"
            self.assertIn("locked", str(exc))
        else:
            self.fail("the worker's write did not wait for the test's transaction")


def test_without_sharing_the_same_code_fails() -> None:
    WithoutSharing.blocked = []
    run(
        WithoutSharing,
        "test_workers_do_not_see_the_tests_rows",
        "test_a_worker_waits_on_the_tests_lock",
    )
    # The blocked write went ahead once the test rolled back: this is why a worker
    # must not outlive its test.
    [future] = WithoutSharing.blocked
    future.exception(timeout=30)
    Note.objects.all().delete()


class EndedTooEarly(TestCase):
    __test__ = False

    def test_ending_while_a_unit_runs_fails_loudly(self) -> None:
        release = threading.Event()
        started = threading.Event()

        def slow() -> int:
            started.set()
            release.wait(10)
            return count()  # after the sharing ended: refused, never run

        pool = ThreadPoolExecutor(1)
        try:
            with (
                self.assertRaisesMessage(SharedConnectionError, "was still running"),
                share_connections(timeout=0.2),
            ):
                future = pool.submit(slow)
                self.assertTrue(started.wait(10))
            release.set()
            with self.assertRaisesMessage(SharedConnectionError, "can no longer use it"):
                future.result(timeout=10)
        finally:
            release.set()
            pool.shutdown(wait=True)

    def test_a_unit_waiting_for_another_fails_instead_of_hanging(self) -> None:
        with ThreadPoolExecutor(2) as pool, share_connections(timeout=0.2):

            def fan_out() -> int:
                return pool.submit(count).result(timeout=10)

            with self.assertRaisesMessage(SharedConnectionError, "one at a time"):
                pool.submit(fan_out).result(timeout=10)

    def test_pools_made_before_sharing_are_covered(self) -> None:
        with ThreadPoolExecutor(2) as pool:
            pool.submit(count).result()  # the workers have their own connections now
            Note.objects.create(text="from the test")
            self.assertIn(unshared_count(pool), (0, "locked"))
            with share_connections():
                self.assertEqual(pool.submit(count).result(), 1)
            self.assertIn(unshared_count(pool), (0, "locked"))


def test_misuse_fails_loudly() -> None:
    run(
        EndedTooEarly,
        "test_ending_while_a_unit_runs_fails_loudly",
        "test_a_unit_waiting_for_another_fails_instead_of_hanging",
        "test_pools_made_before_sharing_are_covered",
    )
    assert Note.objects.count() == 0


def test_with_pytest_djangos_db_fixture(django_db_blocker: Any) -> None:
    # What a pytest-django user writes: the test's transaction, then the block.
    with django_db_blocker.unblock(), transaction.atomic():
        Note.objects.create(text="from the test")
        with share_connections(), ThreadPoolExecutor(2) as pool:
            assert pool.submit(count).result() == 1
        transaction.set_rollback(True)
    assert count() == 0


def test_sharing_does_not_nest() -> None:
    with share_connections(), pytest.raises(RuntimeError, match="does not nest"):
        share_connections().enable()


@pytest.mark.skipif(VENDOR != "sqlite-memory", reason="Django's in-memory SQLite test database")
def test_in_memory_sqlite_needs_sharing() -> None:
    # Without sharing, a worker writing while the test's transaction is open gets
    # "database table is locked" from the shared-cache in-memory database.
    with transaction.atomic():
        Note.objects.create(text="from the test")
        with ThreadPoolExecutor(1) as pool:
            with pytest.raises(Exception, match="locked"):
                pool.submit(create, 1).result()
            with share_connections():
                pool.submit(create, 2).result()
        assert count() == 2
        transaction.set_rollback(True)


def enqueue_creates(n: int) -> list[Any]:
    from django.tasks import task  # noqa: PLC0415 - Django 6.0+

    return [task(create).enqueue(i) for i in range(n)]


def wait_for(results: list[Any]) -> None:
    for result in results:
        for _ in range(1000):
            result.refresh()
            if result.is_finished:
                break
            threading.Event().wait(0.01)


TASKS_ON_OUR_POOL = {
    "default": {
        "BACKEND": "django_thread.tasks.ThreadPoolBackend",
        "OPTIONS": {"MAX_WORKERS": 2},
    }
}


@share_connections()
class TasksInATestCase(TestCase):
    __test__ = False

    def test_tasks_see_and_write_the_tests_rows(self) -> None:
        from django.tasks import task, task_backends  # noqa: PLC0415 - Django 6.0+

        Note.objects.create(text="from the test")
        with self.settings(TASKS=TASKS_ON_OUR_POOL):
            backend = task_backends["default"]
            try:
                # The test runs inside a transaction: an enqueue waits for its commit,
                # which never comes, unless the test runs the on-commit callbacks.
                with self.captureOnCommitCallbacks(execute=True):
                    results = enqueue_creates(20)
                wait_for(results)
                self.assertEqual([], [r.errors for r in results if r.errors])
                with self.captureOnCommitCallbacks(execute=True):
                    counted = task(count).enqueue()
                wait_for([counted])
                self.assertEqual(counted.return_value, 21)
            finally:
                backend.shutdown()  # type: ignore[attr-defined]
        self.assertEqual(count(), 21)


@pytest.mark.skipif(django.VERSION < (6, 0), reason="django.tasks needs Django 6.0 or newer")
def test_the_tasks_backend_under_sharing() -> None:
    run(TasksInATestCase, "test_tasks_see_and_write_the_tests_rows")
    assert Note.objects.count() == 0
