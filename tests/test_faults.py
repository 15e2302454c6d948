"""The server drops connections: idle timeouts and killed sessions, for real.

Every scenario also runs the stdlib class, which must fail, so these tests can fail.
"""

from __future__ import annotations

import collections
import concurrent.futures
import random
import threading
import time
from typing import Any

import pytest

from django_thread import Thread, ThreadPoolExecutor
from tests.faults import Killer, Outcome, Recorder, idle_timeout
from tests.server import ServerProbe
from tests.work import failed_passes, main_backend_ids, query

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

TASKS = 400
WORKERS = 4


def run_in_waves(
    pools: list[concurrent.futures.Executor],
    recorders: list[Recorder],
    waves: int,
    pause: float,
) -> None:
    """Submit TASKS small ORM tasks in *waves*, idle for *pause* between waves."""
    for wave in range(waves):
        if wave:
            time.sleep(pause)  # every connection sits idle past the server's timeout
        futures = [
            pool.submit(recorder.task(query))
            for pool, recorder in zip(pools, recorders, strict=True)
            for _ in range(TASKS // waves)
        ]
        concurrent.futures.wait(futures)


def waves_for(vendor: str) -> int:
    # MariaDB's shortest timeout is a whole second: fewer, longer waves.
    return 20 if vendor == "postgresql" else 8


def test_idle_timeout_with_health_checks_fails_no_task(
    conn_settings: Any, server: ServerProbe
) -> None:
    timeout = idle_timeout(server.vendor)
    conn_settings(max_age=None, health_checks=True, **timeout.options)
    waves = waves_for(server.vendor)

    with (
        Recorder() as ours,
        Recorder() as stdlib,
        ThreadPoolExecutor(WORKERS) as pool,
        concurrent.futures.ThreadPoolExecutor(WORKERS) as plain,
    ):
        run_in_waves([pool, plain], [ours, stdlib], waves, timeout.pause)

    print(
        f"\nidle timeout, health checks on: django_thread {ours.summary()}; "
        f"stdlib {stdlib.summary()}"
    )
    assert len(ours.outcomes) == len(stdlib.outcomes) == TASKS
    assert ours.failures == []
    # The server really dropped them: ours reconnected after (nearly) every pause.
    assert ours.connects + stdlib.connects > WORKERS * (waves - 1)
    assert len(stdlib.failures) > TASKS // 2


def test_idle_timeout_without_health_checks_costs_one_task_per_drop(
    conn_settings: Any, server: ServerProbe
) -> None:
    timeout = idle_timeout(server.vendor)
    conn_settings(max_age=None, health_checks=False, **timeout.options)
    waves = waves_for(server.vendor)

    with Recorder() as ours, ThreadPoolExecutor(WORKERS) as pool:
        run_in_waves([pool], [ours], waves, timeout.pause)

    print(f"\nidle timeout, health checks off: django_thread {ours.summary()}")
    assert ours.failures, "the server should have dropped idle connections"
    # Each dropped connection costs the one task that finds it dead, then is closed.
    per_session = collections.Counter(o.session for o in ours.failures)
    assert max(per_session.values()) == 1, per_session
    assert len(ours.failures) <= WORKERS * (waves - 1)


def kill_while_working(
    pool: concurrent.futures.Executor, recorder: Recorder, killer: Killer
) -> list[concurrent.futures.Future[None]]:
    rng = random.Random(2)
    futures = [pool.submit(recorder.task(query, delay=rng.uniform(0, 0.02))) for _ in range(TASKS)]
    killer.run_until(lambda: all(f.done() for f in futures))
    return futures


def unrecovered(pool: concurrent.futures.Executor, dead_on_arrival: int = 0) -> list[Outcome]:
    """The tasks that show a worker not running database work again once the killing stops.

    Without health checks, or within the health-check window, a session killed after a
    worker's last task still costs that worker its next task: *dead_on_arrival* of them
    may fail, once. So each worker first gets exactly one task (they wait for each
    other: no worker can sit this round out and meet its dead session later), and then
    none of 10 tasks per worker may fail. Each failure says on which worker and session.
    """
    barrier = threading.Barrier(WORKERS)

    def one_each() -> int:
        barrier.wait(timeout=30)  # a worker that never comes fails all four
        return query()

    with Recorder() as first, Recorder() as then:
        concurrent.futures.wait([pool.submit(first.task(one_each)) for _ in range(WORKERS)])
        concurrent.futures.wait([pool.submit(then.task(query)) for _ in range(10 * WORKERS)])
    if len(first.failures) > dead_on_arrival:
        return first.failures + then.failures
    return then.failures


def test_killed_sessions_fail_only_tasks_with_a_query_in_flight(
    conn_settings: Any, server: ServerProbe
) -> None:
    conn_settings(max_age=None, health_checks=True)
    killer = Killer(server, spare=main_backend_ids())

    with Recorder() as ours, ThreadPoolExecutor(WORKERS) as pool:
        kill_while_working(pool, ours, killer)
        assert unrecovered(pool) == []

    print(
        f"\nkills, health checks on: {killer.killed} sessions killed; "
        f"django_thread {ours.summary()}"
    )
    assert killer.killed >= WORKERS * 3
    # A task may fail only if a kill was under way while it was using the database;
    # a connection killed while idle, before the task began, is caught by the check.
    assert [o for o in ours.failures if not killer.overlaps(o)] == []


def test_killed_sessions_without_health_checks_cost_one_task_each(
    conn_settings: Any, server: ServerProbe
) -> None:
    conn_settings(max_age=None, health_checks=False)
    killer = Killer(server, spare=main_backend_ids())

    with Recorder() as ours, ThreadPoolExecutor(WORKERS) as pool:
        kill_while_working(pool, ours, killer)
        assert unrecovered(pool, dead_on_arrival=WORKERS) == []

    print(
        f"\nkills, health checks off: {killer.killed} sessions killed; "
        f"django_thread {ours.summary()}"
    )
    assert ours.failures
    assert len(ours.failures) <= killer.killed
    per_session = collections.Counter(o.session for o in ours.failures if o.session)
    assert max(per_session.values(), default=1) == 1, per_session


def test_stdlib_pool_never_recovers_from_killed_sessions(
    conn_settings: Any, server: ServerProbe
) -> None:
    conn_settings(max_age=None, health_checks=True)
    killer = Killer(server, spare=main_backend_ids())

    with Recorder() as stdlib, concurrent.futures.ThreadPoolExecutor(WORKERS) as plain:
        kill_while_working(plain, stdlib, killer)
        unrecovered_tasks = unrecovered(plain)

    print(f"\nkills: {killer.killed} sessions killed; stdlib {stdlib.summary()}")
    assert unrecovered_tasks
    assert len(stdlib.failures) > TASKS // 2


def test_long_running_loop_survives_idle_timeouts_with_unit_of_work(
    conn_settings: Any, server: ServerProbe
) -> None:
    timeout = idle_timeout(server.vendor)
    conn_settings(max_age=None, health_checks=True, **timeout.options)
    # PostgreSQL's timeout is 100 ms, MariaDB's a whole second: fewer iterations there.
    iterations = 100 if server.vendor == "postgresql" else 12
    failures: dict[str, list[float]] = {}

    def loop(name: str, each_a_unit: bool) -> None:
        failures[name] = failed_passes(iterations, each_a_unit=each_a_unit, pause=timeout.pause)

    threads = [
        Thread(target=loop, args=("unit_of_work", True)),
        threading.Thread(target=loop, args=("plain loop", False)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    took = {
        name: f"{len(passes)} failed, longest {max(passes, default=0):.3f} s"
        for name, passes in failures.items()
    }
    print(f"\nlong-running loop, {iterations} iterations: {took}")
    assert len(failures["plain loop"]) == iterations - 1
    # Units survive any idle time between them. What none can survive is the machine
    # stalling inside one for longer than the server's timeout (CI's lanes share two
    # cores; PostgreSQL's is 100 ms here): the session is dropped mid-unit. So a failed
    # unit must have lasted that long; a policy that let the timeout through would
    # fail passes of a few milliseconds.
    assert [s for s in failures["unit_of_work"] if s < timeout.seconds] == []
