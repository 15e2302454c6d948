"""Small units of work the tests run in threads, and what they report back."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Sequence

import pytest
from django.db import connections

from django_thread import unit_of_work
from tests.testapp.models import Note


def query() -> int:
    """One small ORM query on the default database."""
    return Note.objects.count()


def failed_passes(passes: int, *, each_a_unit: bool, pause: float = 0.0) -> list[float]:
    """Run a loop of *passes* small queries in the calling thread; how long each failed
    pass took, in seconds.

    *each_a_unit*: each pass inside ``with unit_of_work():``, as the docs advise a
    long-running loop; otherwise a plain loop. *pause*: idle time after each pass.
    """
    failed = []
    for _ in range(passes):
        started = time.monotonic()
        try:
            if each_a_unit:
                with unit_of_work():
                    query()
            else:
                query()
        except Exception:
            failed.append(time.monotonic() - started)
        time.sleep(pause)  # idle, like a poller with nothing to do
    return failed


def session_id(alias: str = "default") -> int | None:
    """The server-side id of this thread's open session on *alias*, if it has one.

    Read from the driver's client-side state: no query, so it works on a dead socket.
    """
    conn = connections[alias]
    raw = conn.connection
    if raw is None:
        return None
    if conn.vendor == "postgresql":
        return int(raw.info.backend_pid)
    if conn.vendor == "mysql":
        return int(raw.thread_id())
    return None


def main_backend_ids() -> set[int]:
    """Ids of the calling thread's open sessions, which fault injection must spare."""
    current = session_id()
    return set() if current is None else {current}


def thread_name() -> str:
    return threading.current_thread().name


def back_to_back(
    pool: concurrent.futures.ThreadPoolExecutor, calls: Sequence[Callable[[], object]]
) -> list[concurrent.futures.Future[object]]:
    """Submit *calls* so that a busy worker goes from each straight to the next.

    They queue up behind a task that waits for them all, so that on Python 3.12+ each
    worker takes its next one without waiting (get_nowait()), the path a loaded pool
    takes; one at a time, with result() in between, the worker waits (get()).
    """
    gate = threading.Event()
    held = [pool.submit(gate.wait, 10) for _ in range(pool._max_workers)]
    futures = [pool.submit(call) for call in calls]
    gate.set()
    for future in held:
        assert future.result() is True
    return futures


# A worker that waits for its next task ends one unit and begins the next in two steps;
# a busy one goes from one task straight to the next in one (between_units()). Tests of
# what happens between two tasks run both ways.
QUEUED = pytest.mark.parametrize("queued", [False, True], ids=["one at a time", "back to back"])


def in_turn(
    pool: concurrent.futures.ThreadPoolExecutor,
    calls: Sequence[Callable[[], object]],
    *,
    queued: bool,
) -> list[concurrent.futures.Future[object]]:
    """Run *calls* on *pool* in turn, and return their futures, all done.

    *queued*: back to back (a busy worker's path); otherwise one at a time, each
    submitted once the one before is done (a worker that waits for its next task).
    """
    if queued:
        futures = back_to_back(pool, calls)
    else:
        futures = []
        for call in calls:
            futures.append(pool.submit(call))
            concurrent.futures.wait(futures[-1:])
    concurrent.futures.wait(futures)
    return futures
