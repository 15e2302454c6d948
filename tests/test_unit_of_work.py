"""unit_of_work: the per-unit policy for threads this library does not create."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, connections, transaction

from django_thread import _connections, unit_of_work
from tests.conftest import requires_server, settle
from tests.server import ServerProbe
from tests.testapp.models import Note
from tests.work import query, session_id

pytestmark = pytest.mark.django_db(transaction=True)


def test_closes_obsolete_connections_on_exit(conn_settings: Any) -> None:
    conn_settings(max_age=0)
    with unit_of_work():
        query()
        assert connection.connection is not None
    assert connection.connection is None


def test_keeps_young_persistent_connections(conn_settings: Any) -> None:
    conn_settings(max_age=None)
    with unit_of_work():
        query()
        raw = connection.connection
    with unit_of_work():
        query()
        assert connection.connection is raw


def test_never_closes_inside_an_atomic_block(conn_settings: Any) -> None:
    conn_settings(max_age=0)
    with transaction.atomic():
        Note.objects.create(text="outer")
        with unit_of_work():
            Note.objects.create(text="inner")
        Note.objects.create(text="outer again")
    assert Note.objects.count() == 3


def test_decorator_runs_a_unit_per_call_in_a_third_party_pool(
    conn_settings: Any, probe: ServerProbe
) -> None:
    conn_settings(max_age=0)
    baseline = probe.steady()

    @unit_of_work()
    def task(i: int) -> int:
        Note.objects.create(text=str(i))
        return i

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        assert sum(pool.map(task, range(30))) == sum(range(30))
        # Each call closed its connection on the way out, in the worker.
        assert settle(probe, baseline) == baseline
    assert Note.objects.count() == 30


def test_with_asyncio_to_thread(conn_settings: Any, probe: ServerProbe) -> None:
    conn_settings(max_age=0)
    baseline = probe.steady()

    @unit_of_work()
    def count_notes() -> int:
        return query()

    async def main() -> list[int]:
        return await asyncio.gather(*(asyncio.to_thread(count_notes) for _ in range(5)))

    assert asyncio.run(main()) == [0] * 5
    assert settle(probe, baseline) == baseline


def test_exceptions_pass_through_and_still_clean_up(conn_settings: Any) -> None:
    conn_settings(max_age=0)
    raw = None

    def fail() -> None:
        nonlocal raw
        with unit_of_work():
            query()
            raw = connection.connection
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        fail()
    assert raw is not None
    assert connection.connection is None


@pytest.mark.parametrize("age", ["none", "young", "expired"])
@pytest.mark.parametrize("errors", ["none", "usable", "dead"])
def test_tidying_a_connection_decides_as_djangos_own_method(
    conn_settings: Any, probe: ServerProbe, errors: str, age: str
) -> None:
    # Our per-unit tidying skips Django's close_if_unusable_or_obsolete() when it
    # would only arm the health check. State by state (an error or not, on a
    # connection that still works or whose session was killed; CONN_MAX_AGE not set,
    # not reached or passed), both must leave the connection exactly the same.
    if errors == "dead":
        requires_server(probe)
    conn_settings(max_age=None, health_checks=True)
    close_at = {"none": None, "young": 60.0, "expired": -1.0}[age]

    def outcome(tidy: Callable[[Any], object]) -> tuple[bool, bool, bool]:
        conn = connections["default"]
        query()
        if errors == "dead":
            killed = session_id()
            assert killed is not None
            probe.kill(killed)
            assert probe.drained(5.0, [killed]) == 0
        conn.errors_occurred = errors != "none"
        conn.close_at = None if close_at is None else time.monotonic() + close_at
        conn.health_check_done = True  # type: ignore[attr-defined]
        tidy(conn)
        seen = (conn.connection is None, conn.health_check_done, conn.errors_occurred)  # type: ignore[attr-defined]
        conn.close()
        return seen

    djangos = outcome(lambda conn: conn.close_if_unusable_or_obsolete())
    ours = outcome(_connections._close_if_unusable_or_obsolete)
    assert ours == djangos
    closed = errors == "dead" or age == "expired"
    assert djangos[0] is closed  # the states differ: the comparison means something


def test_a_backend_that_overrides_the_method_always_gets_it_called(conn_settings: Any) -> None:
    # A persistent connection with no error: Django's own method would only arm the
    # health check, so we skip the call. A backend of its own overriding the method
    # may do more there, and gets it called as each outer unit begins and ends.
    conn_settings(max_age=None, health_checks=True)
    calls: list[str] = []

    def units() -> None:
        conn = connections["default"]

        class Overriding(type(conn)):  # type: ignore[misc]
            def close_if_unusable_or_obsolete(self) -> None:
                calls.append(self.alias)
                super().close_if_unusable_or_obsolete()

        conn.__class__ = Overriding
        query()  # connected outside a unit: the units below carry it over
        for _ in range(3):
            with unit_of_work():
                query()
        conn.close()

    thread = threading.Thread(target=units)
    thread.start()
    thread.join()
    assert calls == ["default"] * 6
