"""A connect() whose set-up fails half-way: the session ends, or a set-up statement fails.

Django's connect() opens the socket, then sets the session up (autocommit, time zone,
role, isolation level), and only then sends ``connection_created``. A failure in
between leaves the thread's wrapper holding an open connection that nobody announced,
and that counts as healthy (new connections are), so no health check pings it: every
later query in the thread meets it. Each test runs the stdlib class beside ours, which
keeps failing, or worse, runs its queries on the half set up session. (That such a
connection is closed as its thread ends is tested in test_thread_exit.py.)
"""

from __future__ import annotations

import concurrent.futures
import gc
import threading
import warnings
from typing import Any

import pytest
from django.db import connection, connections

from django_thread import ThreadPoolExecutor, unit_of_work
from tests.conftest import settle
from tests.faults import set_up_killed, set_up_statement
from tests.server import ServerProbe
from tests.work import QUEUED, failed_passes, in_turn, query

pytestmark = pytest.mark.django_db(transaction=True)

POLICIES = pytest.mark.parametrize(
    "policy",
    [{"max_age": None, "health_checks": True}, {"max_age": 0}],
    ids=["persistent-checks", "age0"],
)


@POLICIES
@QUEUED
def test_a_session_killed_during_set_up_costs_one_task(
    conn_settings: Any, server: ServerProbe, policy: dict[str, Any], queued: bool
) -> None:
    conn_settings(**policy, **set_up_statement(server))
    tasks = [query] * 10

    with set_up_killed(server) as killed, ThreadPoolExecutor(1) as pool:
        ours = in_turn(pool, tasks, queued=queued)
    with set_up_killed(server), concurrent.futures.ThreadPoolExecutor(1) as plain:
        theirs = in_turn(plain, tasks, queued=queued)

    assert len(killed) == 1
    assert [f.exception() is None for f in ours] == [False] + [True] * 9
    # The stdlib's worker keeps the dead connection: every task after it fails too.
    assert [f.exception() is None for f in theirs] == [False] * 10


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_a_busy_worker_with_another_connection_open_closes_the_half_set_up_one(
    conn_settings: Any, server: ServerProbe
) -> None:
    # The worker already holds a connection on "other", so a busy worker goes from
    # task to task in one step (between_units()): that step must find the half set
    # up connection on "default" too, among the ones it tidies.
    conn_settings(max_age=None, health_checks=True, **set_up_statement(server))

    def query_other() -> int:
        return sum(1 for _ in connections["other"].introspection.table_names())

    outcomes = []
    for executor in (ThreadPoolExecutor, concurrent.futures.ThreadPoolExecutor):
        with executor(1) as pool:
            pool.submit(query_other).result()
            with set_up_killed(server) as killed:
                futures = in_turn(pool, [query] * 4, queued=True)
            assert len(killed) == 1
            outcomes.append([f.exception() is None for f in futures])
    gc.collect()  # the stdlib's worker left its connections to the collector
    assert outcomes == [[False, True, True, True], [False, False, False, False]]


@POLICIES
def test_a_session_killed_during_set_up_costs_one_unit_of_work(
    conn_settings: Any, server: ServerProbe, policy: dict[str, Any]
) -> None:
    conn_settings(**policy, **set_up_statement(server))
    failures: dict[str, int] = {}
    for name, each_a_unit in [("unit_of_work", True), ("plain loop", False)]:

        def loop(name: str = name, each_a_unit: bool = each_a_unit) -> None:
            failures[name] = len(failed_passes(5, each_a_unit=each_a_unit))

        with set_up_killed(server):
            thread = threading.Thread(target=loop)
            thread.start()
            thread.join()
    assert failures == {"unit_of_work": 1, "plain loop": 5}


@POLICIES
def test_a_half_set_up_connection_left_outside_any_unit_is_closed_as_a_unit_begins(
    conn_settings: Any, server: ServerProbe, policy: dict[str, Any]
) -> None:
    # The failed connect happens outside any unit; the next query runs either in a
    # unit_of_work, which closes the half set up connection as it begins, or plainly,
    # where it meets that connection again.
    conn_settings(**policy, **set_up_statement(server))
    outcomes: dict[str, list[bool]] = {}

    def attempt(each_a_unit: bool) -> bool:
        try:
            if each_a_unit:
                with unit_of_work():
                    query()
            else:
                query()
        except Exception:
            return False
        return True

    for name, each_a_unit in [("unit_of_work", True), ("plain", False)]:

        def run(name: str = name, each_a_unit: bool = each_a_unit) -> None:
            assert attempt(each_a_unit=True)  # the thread has run a unit already
            connections.close_all()
            with set_up_killed(server) as killed:
                first = attempt(each_a_unit=False)  # outside any unit: fails
            assert len(killed) == 1
            outcomes[name] = [first, attempt(each_a_unit)]
            connections.close_all()

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
    assert outcomes == {"unit_of_work": [False, True], "plain": [False, False]}


def current_user() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        return str(cursor.fetchone()[0])


@pytest.fixture
def no_such_role(conn_settings: Any, server: ServerProbe) -> str:
    """PostgreSQL settings whose set-up statement fails on a live session.

    ``assume_role`` names a role that does not exist: the socket opens, then Django's
    ``SET ROLE`` fails, and the session stays up, as the settings' user.
    """
    if server.vendor != "postgresql":
        pytest.skip("assume_role is PostgreSQL's")
    conn_settings(max_age=None, health_checks=True, assume_role="django_thread_no_such_role")
    return str(server.settings["USER"])


def collect_the_stdlibs(server: ServerProbe, baseline: int) -> None:
    """Close what the stdlib's threads left, as only the garbage collector does."""
    with warnings.catch_warnings():  # drivers warn about sockets closed by GC
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    assert settle(server, baseline) == baseline


@pytest.mark.usefixtures("no_gc")
@QUEUED
def test_no_task_runs_on_a_session_whose_set_up_failed(
    no_such_role: str, server: ServerProbe, queued: bool
) -> None:
    baseline = server.steady()
    with ThreadPoolExecutor(1) as pool:
        ours = in_turn(pool, [current_user] * 5, queued=queued)
        ours_open = settle(server, baseline, timeout=1.0)
    with concurrent.futures.ThreadPoolExecutor(1) as plain:
        theirs = in_turn(plain, [current_user] * 5, queued=queued)
        theirs_open = settle(server, baseline + 1, timeout=1.0)

    # Each task tries to connect afresh, and fails as loudly as the first one.
    assert all("django_thread_no_such_role" in str(f.exception()) for f in ours)
    assert ours_open == baseline  # the half set up session was closed
    # The stdlib's worker runs every task after the first on the half set up session,
    # as a user the settings do not ask for.
    assert "django_thread_no_such_role" in str(theirs[0].exception())
    assert [f.result() for f in theirs[1:]] == [no_such_role] * 4
    assert theirs_open == baseline + 1
    del theirs  # its first exception's traceback holds the stdlib worker's wrapper
    collect_the_stdlibs(server, baseline)
