"""The same threaded ORM workload under different connection settings.

A real project sets CONN_MAX_AGE, CONN_HEALTH_CHECKS and the pool in settings.py once.
To compare them in one process, this module changes the default alias's settings
between runs: Django reads them from that dict each time a connection opens, and
every thread's connection shares it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import dataclasses
import gc
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from django.db import connection, connections
from django.db.backends.signals import connection_created
from django.db.models import Sum
from django.db.utils import load_backend

import django_thread
from ledger.models import Entry

IMPLEMENTATIONS: dict[str, tuple[type[threading.Thread], type[concurrent.futures.Executor]]] = {
    "threading": (threading.Thread, concurrent.futures.ThreadPoolExecutor),
    "django_thread": (django_thread.Thread, django_thread.ThreadPoolExecutor),
}


@dataclasses.dataclass(frozen=True)
class Setting:
    label: str
    max_age: int | None
    health_checks: bool
    pool: bool = False


SETTINGS = [
    Setting("CONN_MAX_AGE=0", 0, health_checks=False),
    Setting("CONN_MAX_AGE=0, checks", 0, health_checks=True),
    Setting("CONN_MAX_AGE=60", 60, health_checks=False),
    Setting("CONN_MAX_AGE=60, checks", 60, health_checks=True),
    Setting("CONN_MAX_AGE=None", None, health_checks=False),
    Setting("CONN_MAX_AGE=None, checks", None, health_checks=True),
    Setting("native pool", 0, health_checks=True, pool=True),
]


@dataclasses.dataclass
class Result:
    setting: str
    implementation: str
    units: int
    connects: int  # times Django opened (or, with the pool, checked out) a connection
    reused: int  # units that found their thread's connection already open
    sessions: int  # distinct sessions the database server saw
    held_at_end: int  # sessions still open once every thread has ended
    failed: int
    seconds: float
    errors: list[str] = dataclasses.field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.units / self.seconds if self.seconds else 0.0


class Monitor:
    """Asks the server how many sessions the workload holds, on a connection of its own.

    SQLite has no server: there it counts this process's open handles on the file.
    """

    def __init__(self) -> None:
        db = connections["default"]
        self.vendor = db.vendor
        self.path = Path(db.settings_dict["NAME"]).resolve() if db.vendor == "sqlite" else None
        # A separate DatabaseWrapper with a frozen copy of the settings, so neither the
        # runs' setting changes nor their cleanup touch it.
        settings = copy.deepcopy(db.settings_dict)
        settings["OPTIONS"].pop("pool", None)
        self.db = load_backend(settings["ENGINE"]).DatabaseWrapper(settings, "monitor")

    def count(self) -> int:
        if self.path is not None:
            return sum(1 for fd in _open_files() if fd == self.path)
        sql = {
            "postgresql": "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()",
            "mysql": "SELECT COUNT(*) FROM information_schema.processlist"
            " WHERE db = DATABASE() AND id <> CONNECTION_ID()",
        }[self.vendor]
        with self.db.cursor() as cursor:
            cursor.execute(sql)
            return int(cursor.fetchone()[0])

    def settle(self, expected: int, timeout: float = 2.0) -> int:
        """The count once it is *expected*: a server sees a closed socket late."""
        deadline = time.monotonic() + timeout
        while (count := self.count()) != expected and time.monotonic() < deadline:
            time.sleep(0.02)
        return count

    def steady(self, timeout: float = 2.0) -> int:
        """The count once two reads 50 ms apart agree.

        Sessions closed just before (this thread's, an earlier run's) may still be
        listed for a few milliseconds: a baseline must not include them.
        """
        previous, deadline = self.count(), time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if (current := self.count()) == previous:
                return current
            previous = current
        return previous

    def close(self) -> None:
        self.db.close()


def _open_files() -> Iterator[Path]:
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            yield Path(os.readlink(f"/proc/self/fd/{fd}"))


@contextlib.contextmanager
def database_settings(setting: Setting, pool_size: int) -> Iterator[None]:
    db = connections["default"].settings_dict
    saved = copy.deepcopy(db)
    db["CONN_MAX_AGE"] = setting.max_age
    db["CONN_HEALTH_CHECKS"] = setting.health_checks
    if setting.pool:
        db["OPTIONS"] = {
            **db["OPTIONS"],
            "pool": {"min_size": 0, "max_size": pool_size},
        }
    try:
        yield
    finally:
        if setting.pool:
            connections["default"].close_pool()
        db.clear()
        db.update(saved)


class Tally:
    """Counts connects and server sessions, from every thread."""

    def __init__(self) -> None:
        self.connects = 0
        self.sessions: set[object] = set()
        self.failed = 0
        self.reused = 0
        self.errors: set[str] = set()
        self.lock = threading.Lock()

    def connected(self, sender: object, connection: Any, **kwargs: object) -> None:
        with self.lock:
            self.connects += 1
            self.sessions.add(_session_id(connection))


def _session_id(db: Any) -> object:
    raw = db.connection
    if db.vendor == "postgresql":
        return raw.info.backend_pid
    if db.vendor == "mysql":
        return raw.thread_id()
    return object()  # SQLite: every connect opens the file anew


def account_total(account: str) -> int:
    """One unit of work: a small aggregate query."""
    return Entry.objects.filter(account=account).aggregate(total=Sum("amount"))["total"] or 0


def run(
    setting: Setting,
    implementation: str,
    units: int = 200,
    workers: int = 4,
    threads: int = 4,
) -> Result:
    """Run *units* pool tasks and *threads* threads; report what the database saw."""
    thread_cls, executor_cls = IMPLEMENTATIONS[implementation]
    monitor = Monitor()
    tally = Tally()
    connection.close()  # the main thread takes no part: count only the workload's
    baseline = monitor.steady()

    def guarded(fn: Callable[[], object]) -> Callable[[], None]:
        def unit() -> None:
            if connection.connection is not None:
                with tally.lock:
                    tally.reused += 1
            try:
                fn()
            except Exception as exc:
                with tally.lock:
                    tally.failed += 1
                    tally.errors.add(f"{type(exc).__name__}: {exc}")

        return unit

    def deposit(n: int) -> None:
        Entry.objects.create(account=f"thread-{n}", amount=n)
        account_total(f"thread-{n}")

    connection_created.connect(tally.connected)
    # The cyclic GC would close abandoned connections at some unpredictable moment
    # (it runs on allocation counts, not on time); keep it out of the measurement.
    gc.disable()
    try:
        with database_settings(setting, pool_size=workers + threads):
            started = time.perf_counter()
            with executor_cls(max_workers=workers) as pool:
                futures = [
                    pool.submit(guarded(lambda i=i: account_total(f"acct-{i % 10}")))
                    for i in range(units)
                ]
                spawned = [
                    thread_cls(target=guarded(lambda n=n: deposit(n))) for n in range(threads)
                ]
                for thread in spawned:
                    thread.start()
                for thread in spawned:
                    thread.join()
                concurrent.futures.wait(futures)
            seconds = time.perf_counter() - started
            held = monitor.settle(baseline, timeout=1.0) - baseline
    finally:
        gc.enable()
        connection_created.disconnect(tally.connected)
        monitor.close()
    gc.collect()  # now let the collector close what the plain threads left behind
    return Result(
        setting.label,
        implementation,
        units + threads,
        tally.connects,
        tally.reused,
        len(tally.sessions),
        held,
        tally.failed,
        seconds,
        sorted(tally.errors),
    )
