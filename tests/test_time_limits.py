"""unit_of_work(statement_timeout=...): a time limit the database itself enforces.

PostgreSQL cancels the statement (statement_timeout), MariaDB interrupts it
(max_statement_time), SQLite's engine stops at its progress handler. Each test runs
on a real database and asserts the database's own error; the plain case shows that the
same statement without the limit really runs past it.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from django.db import OperationalError, connection, connections, transaction

from django_thread import ThreadPoolExecutor, unit_of_work
from django_thread._connections import next_unit
from django_thread.testing import share_connections
from tests.conftest import VENDOR
from tests.server import ServerProbe
from tests.testapp.models import Note
from tests.work import session_id

T = TypeVar("T")

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])

# What each database says when it stops a statement at the limit.
TIMED_OUT = {
    "postgresql": "canceling statement due to statement timeout",
    "mysql": "max_statement_time exceeded",
    "sqlite3": "interrupted",
}[VENDOR]


def sleep(seconds: float, alias: str = "default") -> None:
    """One statement that runs for *seconds* on the server (SQLite: in its engine)."""
    conn = connections[alias]
    with conn.cursor() as cursor:
        if conn.vendor == "postgresql":
            cursor.execute("SELECT pg_sleep(%s)", [seconds])
        elif conn.vendor == "mysql":
            cursor.execute("SELECT SLEEP(%s)", [seconds])
        else:
            # SQLite has no sleep(): a recursive query that counts until a clock read
            # once per row passes the deadline, run step by step by the engine.
            assert conn.connection is not None
            conn.connection.create_function("tl_clock", 0, time.monotonic)
            cursor.execute(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                "WHERE tl_clock() < %s) SELECT count(*) FROM c",
                [time.monotonic() + seconds],
            )
        cursor.fetchall()


def limit_in_force(alias: str = "default") -> tuple[Any, ...] | None:
    """The session's time limits as the server reports them (None on SQLite)."""
    conn = connections[alias]
    with conn.cursor() as cursor:
        if conn.vendor == "postgresql":
            cursor.execute(
                "SELECT current_setting('statement_timeout'), "
                "current_setting('idle_in_transaction_session_timeout')"
            )
        elif conn.vendor == "mysql":
            cursor.execute("SELECT @@SESSION.max_statement_time")
        else:
            return None
        return tuple(cursor.fetchone())


DEFAULT = {"postgresql": ("0", "0"), "mysql": (0.0,), "sqlite3": None}[VENDOR]
ONE_SECOND = {"postgresql": ("1s", "1s"), "mysql": (1.0,), "sqlite3": None}[VENDOR]
# Inside the caller's transaction PostgreSQL leaves the idle limit alone (see below).
IN_A_TRANSACTION = {"postgresql": ("1s", "0"), "mysql": (1.0,), "sqlite3": None}[VENDOR]
THREE_SECONDS = {"postgresql": ("3s", "3s"), "mysql": (3.0,), "sqlite3": None}[VENDOR]


def in_one_worker(*steps: Callable[[], Any]) -> list[Any]:
    """Run *steps* one after another in the same pool worker thread."""
    with ThreadPoolExecutor(1) as pool:
        return [pool.submit(step).result() for step in steps]


def timed(fn: Callable[[], Any]) -> tuple[BaseException | None, float]:
    started = time.monotonic()
    try:
        fn()
    except Exception as exc:
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


def test_without_a_limit_the_statement_runs_long(conn_settings: Any) -> None:
    # The control: the statements below really outlast a 1 s limit.
    conn_settings(max_age=None)

    def plain() -> None:
        with unit_of_work():
            sleep(1.5)

    [(error, elapsed)] = in_one_worker(lambda: timed(plain))
    assert error is None
    assert elapsed >= 1.5


def test_a_statement_over_the_limit_fails_and_its_transaction_rolls_back(
    conn_settings: Any,
) -> None:
    conn_settings(max_age=None)  # the same connection serves the next unit

    def limited() -> tuple[BaseException | None, float, Any, int | None]:
        with unit_of_work(statement_timeout=1):
            seen = limit_in_force()
            with transaction.atomic():
                Note.objects.create(text="lost")
                error, elapsed = timed(lambda: sleep(5))
                if error is not None:
                    raise error
        return None, elapsed, seen, session_id()

    def limited_unit() -> tuple[BaseException | None, float, Any, int | None]:
        started = time.monotonic()
        try:
            return limited()
        except Exception as exc:
            return exc, time.monotonic() - started, None, session_id()

    def next_unit_in_thread() -> tuple[Any, int | None, BaseException | None]:
        with unit_of_work():
            error, _ = timed(lambda: sleep(1.5))
            return limit_in_force(), session_id(), error

    (error, elapsed, _, session), (after, next_session, next_error) = in_one_worker(
        limited_unit, next_unit_in_thread
    )
    assert isinstance(error, OperationalError)
    assert TIMED_OUT in str(error)
    assert elapsed < 4
    assert Note.objects.count() == 0  # rolled back on the server
    assert next_session == session  # the very same connection ...
    assert after == DEFAULT  # ... is back at the server's default
    assert next_error is None  # and runs long statements again


def test_the_limit_is_set_on_connections_already_open_and_opened_during_the_unit(
    conn_settings: Any,
) -> None:
    conn_settings(max_age=None)

    def work() -> tuple[Any, ...]:
        Note.objects.count()  # default is open before the unit; other is not
        before = limit_in_force()
        with unit_of_work(statement_timeout=1):
            during = limit_in_force(), limit_in_force("other")
            errors = timed(lambda: sleep(3))[0], timed(lambda: sleep(3, "other"))[0]
        return before, during, errors, (limit_in_force(), limit_in_force("other"))

    [(before, during, errors, after)] = in_one_worker(work)
    assert before == DEFAULT
    assert during == (ONE_SECOND, ONE_SECOND)
    assert all(TIMED_OUT in str(error) for error in errors), errors
    assert after == (DEFAULT, DEFAULT)


def test_a_nested_limit_applies_for_its_duration_and_the_outer_one_comes_back(
    conn_settings: Any,
) -> None:
    conn_settings(max_age=None)

    def work() -> tuple[Any, ...]:
        with unit_of_work(statement_timeout=3):
            outer = limit_in_force()
            with unit_of_work(statement_timeout=1):
                inner = limit_in_force()
                inner_error = timed(lambda: sleep(2))[0]
            back = limit_in_force()
            outer_error = timed(lambda: sleep(1.5))[0]
        return outer, inner, inner_error, back, outer_error, limit_in_force()

    [(outer, inner, inner_error, back, outer_error, after)] = in_one_worker(work)
    assert (outer, inner, back, after) == (THREE_SECONDS, ONE_SECOND, THREE_SECONDS, DEFAULT)
    assert TIMED_OUT in str(inner_error)
    assert outer_error is None  # 1.5 s is within the outer limit again


def test_a_unit_inside_the_callers_transaction_leaves_it_as_it_was(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # PostgreSQL's settings are transactional: the caller's rollback undoes the set,
    # and nothing is run in the failed transaction to put it back.
    with transaction.atomic():
        with unit_of_work(statement_timeout=1):
            assert limit_in_force() == IN_A_TRANSACTION
        assert limit_in_force() == DEFAULT

    def lost_write() -> None:
        with transaction.atomic(), unit_of_work(statement_timeout=1):
            Note.objects.create(text="lost")
            sleep(3)

    with pytest.raises(OperationalError, match=TIMED_OUT):
        lost_write()
    assert limit_in_force() == DEFAULT
    assert Note.objects.count() == 0
    error, _ = timed(lambda: sleep(1.5))
    assert error is None
    assert not [r for r in caplog.records if r.name == "django_thread"]


def test_a_callers_transaction_left_idle_by_the_unit_survives_it() -> None:
    # The unit works on default for longer than its limit, in short statements, while
    # its caller's transaction on other waits: only the caller may end that session.
    with transaction.atomic(using="other"):
        Note.objects.using("other").create(text="kept")
        with unit_of_work(statement_timeout=1):
            assert limit_in_force("other") == IN_A_TRANSACTION
            for _ in range(3):
                sleep(0.6)
        assert Note.objects.using("other").count() == 1
    assert Note.objects.using("other").count() == 1
    assert limit_in_force("other") == DEFAULT


def test_a_connection_the_server_dropped_is_replaced_with_the_limit(
    conn_settings: Any, server: ServerProbe
) -> None:
    # Setting the limit is the unit's first statement: on a dead session it fails, the
    # connection is closed, and the unit's own first query reconnects, with the limit.
    conn_settings(max_age=None, health_checks=True)

    def open_one() -> int | None:
        Note.objects.count()
        return session_id()

    def limited() -> tuple[int | None, Any, BaseException | None]:
        with unit_of_work(statement_timeout=1):
            return session_id(), limit_in_force(), timed(lambda: sleep(2))[0]

    with ThreadPoolExecutor(1) as pool:
        killed = pool.submit(open_one).result()
        assert killed is not None
        server.kill(killed)
        assert server.drained(5, [killed]) == 0
        session, seen, error = pool.submit(limited).result()
    assert session != killed
    assert seen == ONE_SECOND
    assert TIMED_OUT in str(error)


def test_a_connection_closed_during_the_unit_is_skipped(conn_settings: Any) -> None:
    conn_settings(max_age=None)

    def work() -> tuple[Any, Any]:
        with unit_of_work(statement_timeout=1):
            Note.objects.count()
            connection.close()
            Note.objects.count()  # a new connection: it gets the limit too
            during = limit_in_force()
        return during, limit_in_force()

    assert in_one_worker(work) == [(ONE_SECOND, DEFAULT)]


def test_zero_lifts_the_limit_for_the_unit(conn_settings: Any) -> None:
    conn_settings(max_age=None)

    def work() -> tuple[Any, BaseException | None]:
        with unit_of_work(statement_timeout=1), unit_of_work(statement_timeout=0):
            return limit_in_force(), timed(lambda: sleep(1.5))[0]

    [(seen, error)] = in_one_worker(work)
    assert seen == DEFAULT
    assert error is None


@pytest.mark.parametrize("max_age", [0, None])
def test_next_unit_passes_each_tasks_limit(conn_settings: Any, max_age: int | None) -> None:
    # What django_thread.tasks does per task, inside one pool task; with max_age 0 each
    # task's connection is a new one.
    conn_settings(max_age=max_age)

    def one() -> None: ...
    def two() -> None: ...
    def three() -> None: ...
    def four() -> None: ...

    def drain() -> list[Any]:
        seen = []
        next_unit(one, first=True, statement_timeout=1)
        seen.append((limit_in_force(), timed(lambda: sleep(2))[0]))
        next_unit(two, first=False)
        seen.append((limit_in_force(), None))
        next_unit(three, first=False, statement_timeout=3)
        seen.append((limit_in_force(), None))
        next_unit(four, first=False, statement_timeout=3)  # the same limit: kept
        seen.append((limit_in_force(), timed(lambda: sleep(1.5))[0]))
        return seen

    def after() -> Any:
        return limit_in_force()

    [seen, last] = in_one_worker(drain, after)
    assert [limits for limits, _ in seen] == [ONE_SECOND, DEFAULT, THREE_SECONDS, THREE_SECONDS]
    assert TIMED_OUT in str(seen[0][1])
    assert seen[3][1] is None
    assert last == DEFAULT


@pytest.mark.parametrize(
    ("value", "error"),
    [
        pytest.param(-1, ValueError, id="negative"),
        pytest.param(math.nan, ValueError, id="nan"),
        pytest.param(math.inf, ValueError, id="inf"),
        pytest.param(True, TypeError, id="bool"),
        pytest.param("1", TypeError, id="str"),
    ],
)
def test_a_bad_limit_is_refused_where_the_unit_is_entered(value: Any, error: type) -> None:
    with pytest.raises(error, match="statement_timeout"):
        unit_of_work(statement_timeout=value)
    with pytest.raises(error, match="statement_timeout"):
        next_unit(
            test_a_bad_limit_is_refused_where_the_unit_is_entered,
            first=True,
            statement_timeout=value,
        )
    # Nothing was left behind: the thread runs an ordinary unit afterwards.
    with unit_of_work():
        assert limit_in_force() == DEFAULT


@pytest.mark.django_db(transaction=False, databases=["default", "other"])
def test_under_share_connections_the_tests_connection_gets_its_setting_back() -> None:
    # The unit's statements run in the test's transaction: a failed one in a savepoint.
    def sleep_in_a_savepoint() -> None:
        with transaction.atomic():
            sleep(2)

    def work() -> tuple[Any, BaseException | None]:
        with unit_of_work(statement_timeout=1):
            return limit_in_force(), timed(sleep_in_a_savepoint)[0]

    with share_connections():
        [(during, error)] = in_one_worker(work)
    assert during == IN_A_TRANSACTION
    assert TIMED_OUT in str(error)
    assert limit_in_force() == DEFAULT  # the test's own connection, as it was


# --- Django's native PostgreSQL pool ----------------------------------------------
#
# With OPTIONS["pool"], Django's close() gives the session back to the pool instead
# of ending it: whatever the unit left set on it meets the next borrower. One pooled
# connection, so the next borrower gets the very same server session (same pid).

native_pool = pytest.mark.skipif(VENDOR != "postgresql", reason="the native pool is PostgreSQL's")


def one_pooled_connection(conn_settings: Any) -> None:
    conn_settings(max_age=0, pool={"min_size": 1, "max_size": 1, "timeout": 5})


def in_a_plain_thread(fn: Callable[[], T]) -> T:
    results: list[T] = []
    thread = threading.Thread(target=lambda: results.append(fn()))
    thread.start()
    thread.join()
    return results[0]


def borrow() -> tuple[Any, int | None]:
    """What the next borrower of the pooled session finds, and which session it is."""
    with unit_of_work():
        return limit_in_force(), session_id()


def _timed_out() -> None:
    sleep(3)


def _raised() -> None:
    Note.objects.count()
    raise RuntimeError


def _failed_in_atomic() -> None:
    with transaction.atomic():
        Note.objects.create(text="lost")
        sleep(3)


def _inner_unit_timed_out() -> None:
    # The limit is set on a session already open, by a unit inside the first one.
    with unit_of_work(statement_timeout=1):
        sleep(3)


def _left_in_a_failed_atomic() -> None:
    transaction.atomic().__enter__()  # never exited: the unit ends inside it
    sleep(3)


def _left_in_a_transaction() -> None:
    transaction.set_autocommit(False)
    Note.objects.count()


def _left_in_error() -> None:
    transaction.set_autocommit(False)
    sleep(3)


FAILED_UNITS = [
    pytest.param(_timed_out, True, id="timed-out"),
    pytest.param(_raised, True, id="raised"),
    pytest.param(_failed_in_atomic, True, id="failed-atomic"),
    pytest.param(_inner_unit_timed_out, True, id="inner-unit"),
    # A transaction left open is rolled back, which would undo the put-back: the
    # session is ended rather than given back.
    pytest.param(_left_in_a_failed_atomic, False, id="left-in-failed-atomic"),
    pytest.param(_left_in_a_transaction, False, id="left-in-transaction"),
    pytest.param(_left_in_error, False, id="left-in-error"),
]


def limited_unit(
    body: Callable[[], None],
) -> Callable[[], tuple[Any, int | None, BaseException | None]]:
    """A unit with a 1 s limit (none: *body* sets its own) that connects, then runs *body*."""
    limit = None if body is _inner_unit_timed_out else 1

    def unit() -> tuple[Any, int | None, BaseException | None]:
        seen: Any = None
        session = None
        try:
            with unit_of_work(statement_timeout=limit):
                Note.objects.count()  # connects (the pool lends a session) or reuses
                seen, session = limit_in_force(), session_id()
                body()
        except Exception as exc:
            return seen, session, exc
        return seen, session, None

    return unit


@native_pool
@pytest.mark.parametrize(("body", "reused"), FAILED_UNITS)
@pytest.mark.parametrize("borrower", ["other thread", "same thread"])
def test_the_native_pool_never_hands_on_a_units_limit(
    conn_settings: Any, body: Callable[[], None], reused: bool, borrower: str
) -> None:
    one_pooled_connection(conn_settings)
    unit = limited_unit(body)

    try:
        if borrower == "same thread":
            # In a pool task, the task is the outer unit and ours an inner one.
            [(seen, session, error), (after, next_session)] = in_one_worker(unit, borrow)
        else:  # in a plain thread, ours is the outer unit
            (seen, session, error) = in_a_plain_thread(unit)
            [(after, next_session)] = in_one_worker(borrow)
    finally:
        connections["default"].close_pool()  # type: ignore[attr-defined]
    assert seen == (DEFAULT if body is _inner_unit_timed_out else ONE_SECOND)
    assert (error is None) is (body is _left_in_a_transaction)
    assert after == DEFAULT
    assert (next_session == session) is reused


@native_pool
def test_the_native_pool_gets_the_session_back_between_tasks_with_the_same_limit(
    conn_settings: Any,
) -> None:
    # Two tasks with the same limit keep it set between them (one round trip less);
    # but the first task's session goes back to the pool in between, and another
    # thread may borrow it there.
    one_pooled_connection(conn_settings)

    def one() -> None: ...
    def two() -> None: ...

    def drain() -> tuple[int | None, Any, int | None, Any]:
        next_unit(one, first=True, statement_timeout=1)
        Note.objects.count()
        session = session_id()
        next_unit(two, first=False, statement_timeout=1)
        [(between, borrowed)] = in_one_worker(borrow)  # while task two waits to start
        Note.objects.count()
        return session, between, borrowed, limit_in_force()

    try:
        [(session, between, borrowed, during_two)] = in_one_worker(drain)
    finally:
        connections["default"].close_pool()  # type: ignore[attr-defined]
    assert borrowed == session
    assert between == DEFAULT
    assert during_two == ONE_SECOND


# --- PgBouncer in transaction pooling mode -----------------------------------------
#
# Each transaction runs on whichever server session PgBouncer picks: a setting made
# outside a transaction stays on that session, for the next client. .ci/pgbouncer
# starts one (database django_thread_bouncer: one server session, so the next client
# gets the very same one) and prints the variable that enables these tests.

BOUNCER = os.environ.get("DJANGO_THREAD_TEST_PGBOUNCER", "")


@pytest.fixture
def bouncer(conn_settings: Any) -> None:
    """The alias "other" goes through PgBouncer, with Django's settings for it."""
    if VENDOR != "postgresql":
        pytest.skip("PgBouncer is PostgreSQL's")
    if not BOUNCER:
        pytest.skip("needs DJANGO_THREAD_TEST_PGBOUNCER=host:port (see .ci/pgbouncer)")
    conn_settings(max_age=0)
    host, _, port = BOUNCER.rpartition(":")
    connections.settings["other"].update(
        HOST=host,
        PORT=port,
        NAME="django_thread_bouncer",
        DISABLE_SERVER_SIDE_CURSORS=True,
        OPTIONS={"prepare_threshold": None},
    )


def another_client() -> tuple[Any, int]:
    """What another client of PgBouncer finds on the server session it is given."""
    with unit_of_work(), connections["other"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return limit_in_force("other"), cursor.fetchone()[0]


def test_behind_pgbouncer_a_session_setting_reaches_the_next_client(bouncer: None) -> None:
    # The control: what a plain set_config(..., false) does there.
    def plain() -> int:
        with unit_of_work(), connections["other"].cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid(), set_config('statement_timeout', '1s', false)")
            return int(cursor.fetchone()[0])

    def reset() -> None:
        with unit_of_work(), connections["other"].cursor() as cursor:
            cursor.execute("SELECT set_config('statement_timeout', '0', false)")

    [session, (seen, next_session), _] = in_one_worker(plain, another_client, reset)
    assert next_session == session
    assert seen == ("1s", "0")


def test_behind_pgbouncer_the_limit_holds_in_transactions_and_reaches_no_other_client(
    bouncer: None,
) -> None:
    def unit() -> tuple[Any, ...]:
        with unit_of_work(statement_timeout=1):
            outside = limit_in_force("other")  # autocommit: its own transaction
            [others] = in_one_worker(another_client)  # between two of ours
            with transaction.atomic(using="other"):
                inside = limit_in_force("other")
            try:
                with transaction.atomic(using="other"):
                    sleep(3, "other")
            except OperationalError as exc:
                error: BaseException | None = exc
            else:
                error = None
        return outside, others, inside, error

    [(outside, (others_saw, _), inside, error), (after, _)] = in_one_worker(unit, another_client)
    assert others_saw == DEFAULT
    assert after == DEFAULT
    assert inside == ONE_SECOND
    assert TIMED_OUT in str(error)
    # Outside a transaction nothing can hold the limit: it would stay on the server
    # session PgBouncer happened to pick.
    assert outside == DEFAULT


def test_behind_pgbouncer_nested_limits_and_a_reconnect_leave_nothing_behind(
    bouncer: None,
) -> None:
    def unit() -> tuple[Any, ...]:
        other = connections["other"]
        with unit_of_work(statement_timeout=3):
            with transaction.atomic(using="other"):
                outer = limit_in_force("other")
                with unit_of_work(statement_timeout=1):  # in the caller's transaction
                    inner = limit_in_force("other")
                back = limit_in_force("other")
            other.close()
            with transaction.atomic(using="other"):  # a new connection: the limit again
                again = limit_in_force("other")
            other.close()  # and closed for good: its limit must not stay behind
        return outer, inner, back, again, list(other.execute_wrappers)

    [(outer, inner, back, again, wrappers), (after, _)] = in_one_worker(unit, another_client)
    assert (outer, back, again) == (THREE_SECONDS, THREE_SECONDS, THREE_SECONDS)
    assert inner == ("1s", "3s")  # the caller's idle time keeps the outer unit's limit
    assert wrappers == []
    assert after == DEFAULT


# --- MariaDB: a failed unit, then the next one on the same session -----------------


@pytest.fixture
def keep_engine(conn_settings: Any) -> Iterator[None]:
    """The default alias on django_thread.backends.mysql, which keeps a clean
    connection for the next thread."""
    from django_thread.backends import close_idle  # noqa: PLC0415

    conn_settings(max_age=None)
    connections["default"].close()
    del connections["default"]
    close_idle()
    connections.settings["default"]["ENGINE"] = "django_thread.backends.mysql"
    yield
    connections["default"].close()
    del connections["default"]
    close_idle()  # conn_settings restores ENGINE


@pytest.mark.skipif(VENDOR != "mysql", reason="MariaDB's max_statement_time")
@pytest.mark.parametrize(("body", "reused"), FAILED_UNITS)
def test_on_mariadb_the_next_unit_in_the_thread_finds_the_setting_as_it_was(
    conn_settings: Any, body: Callable[[], None], reused: bool
) -> None:
    conn_settings(max_age=None)
    [(seen, session, error), (after, next_session)] = in_one_worker(limited_unit(body), borrow)
    assert seen == (DEFAULT if body is _inner_unit_timed_out else ONE_SECOND)
    assert (error is None) is (body is _left_in_a_transaction)
    assert after == DEFAULT
    assert (next_session == session) is reused


@pytest.mark.skipif(VENDOR != "mysql", reason="MariaDB's max_statement_time")
@pytest.mark.parametrize(("body", "reused"), FAILED_UNITS)
def test_on_mariadb_a_connection_kept_for_the_next_thread_has_the_setting_as_it_was(
    keep_engine: None, body: Callable[[], None], reused: bool
) -> None:
    (seen, session, _) = in_a_plain_thread(limited_unit(body))  # kept as it ends
    [(after, next_session)] = in_one_worker(borrow)
    assert seen == (DEFAULT if body is _inner_unit_timed_out else ONE_SECOND)
    assert after == DEFAULT
    assert (next_session == session) is reused
