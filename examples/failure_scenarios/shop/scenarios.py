"""Each failure scenario, run with the plain stdlib classes and with django_thread.

Every scenario returns one Row per implementation; `expected` says what must happen
for the lesson to hold (plain threads fail, django_thread does not), and the command
exits non-zero when it did not.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import gc
import threading
import time
from collections.abc import Callable

from django.db import close_old_connections, connection, connections, transaction

import django_thread
from shop.models import Order
from shop.server import (
    CONNECTION_LIMIT,
    LIMITED_ALIAS,
    Server,
    connection_settings,
    idle_timeout_options,
)

WORKERS = 4


@dataclasses.dataclass
class Row:
    implementation: str
    units: int = 0
    failed: int = 0
    detail: str = ""
    errors: list[str] = dataclasses.field(default_factory=list)
    ok: bool = True  # what the scenario set out to show did happen

    def record(self, error: Exception | None) -> None:
        self.units += 1
        if error is not None:
            self.failed += 1
            message = f"{type(error).__name__}: {str(error).strip().splitlines()[0]}"
            if message not in self.errors:
                self.errors.append(message)


@dataclasses.dataclass
class Scenario:
    name: str
    title: str
    run: Callable[[], list[Row]]
    needs_server: bool = True


def attempt(work: Callable[[], object], row: Row, lock: threading.Lock) -> None:
    error = None
    try:
        work()
    except Exception as exc:
        error = exc
    with lock:
        row.record(error)


def new_orders() -> int:
    return Order.objects.filter(status="new").count()


def executors() -> list[tuple[str, type[concurrent.futures.ThreadPoolExecutor]]]:
    return [
        ("concurrent.futures", concurrent.futures.ThreadPoolExecutor),
        ("django_thread", django_thread.ThreadPoolExecutor),
    ]


def idle_timeout() -> list[Row]:
    """Workers sit idle between bursts; the server drops idle sessions meanwhile."""
    options, seconds = idle_timeout_options(connection.vendor)
    rows = []
    with connection_settings(CONN_MAX_AGE=None, CONN_HEALTH_CHECKS=True, OPTIONS=options):
        for name, executor_cls in executors():
            row, lock = Row(name), threading.Lock()
            with executor_cls(WORKERS) as pool:
                for burst in range(5):
                    if burst:
                        time.sleep(seconds * 1.6)  # idle past the server's timeout
                    concurrent.futures.wait(
                        [pool.submit(attempt, new_orders, row, lock) for _ in range(40)]
                    )
            rows.append(row)
    plain, ours = rows
    plain.ok, ours.ok = plain.failed > 0, ours.failed == 0
    return rows


def killed_sessions() -> list[Row]:
    """The server kills every session of the database every 100 ms, mid-run."""
    server = Server()
    rows = []
    connection.close()  # kill only the workers' sessions, not this thread's
    with connection_settings(CONN_MAX_AGE=None, CONN_HEALTH_CHECKS=True):
        for name, executor_cls in executors():
            row, lock = Row(name), threading.Lock()
            killed = 0

            def unit(row: Row = row, lock: threading.Lock = lock) -> None:
                time.sleep(0.005)
                attempt(new_orders, row, lock)

            with executor_cls(WORKERS) as pool:
                futures = [pool.submit(unit) for _ in range(200)]
                while not all(f.done() for f in futures):
                    time.sleep(0.1)
                    for session in server.sessions():
                        server.kill(session)
                        killed += 1
                # Once the killing stops, can every worker work again?
                after = Row("after")
                concurrent.futures.wait(
                    [pool.submit(attempt, new_orders, after, lock) for _ in range(20)]
                )
            recovered = after.failed <= WORKERS  # a dead session costs one unit at most
            row.detail = f"{killed} sessions killed; recovered: {'yes' if recovered else 'no'}"
            row.ok = recovered
            rows.append(row)
    server.close()
    plain, ours = rows
    # Only units whose query was in flight when their session was killed may fail.
    plain.ok = not plain.ok and plain.failed > plain.units // 2
    ours.ok = ours.ok and ours.failed < ours.units // 10
    return rows


def connection_limit() -> list[Row]:
    """Short-lived threads with persistent connections, against a capped user."""
    server = Server()
    rows = []

    def ping() -> None:
        with connections[LIMITED_ALIAS].cursor() as cursor:
            cursor.execute("SELECT 1")

    with server.limited_alias(), connection_settings(LIMITED_ALIAS, CONN_MAX_AGE=None):
        for name, thread_cls in [
            ("threading", threading.Thread),
            ("django_thread", django_thread.Thread),
        ]:
            row, lock = Row(name), threading.Lock()
            gc.disable()  # GC timing is luck; do not let it hide (or cause) the pile-up
            try:
                for _ in range(4):  # four rounds of four threads: 16 connections
                    threads = [thread_cls(target=attempt, args=(ping, row, lock)) for _ in range(4)]
                    for thread in threads:
                        thread.start()
                    for thread in threads:
                        thread.join()
                # A server lists a closed session until its process has exited: let it settle.
                user = connections.settings[LIMITED_ALIAS]["USER"]
                deadline = time.monotonic() + 1.0
                while (held := len(server.sessions(user))) and time.monotonic() < deadline:
                    time.sleep(0.02)
            finally:
                gc.enable()
                gc.collect()
            row.detail = f"limit {CONNECTION_LIMIT}; still open after join: {held}"
            rows.append(row)
    server.close()
    plain, ours = rows
    plain.ok, ours.ok = plain.failed > 0, ours.failed == 0
    return rows


def thread_in_atomic() -> list[Row]:
    """The caller starts a thread inside transaction.atomic(), then keeps writing."""

    class NaiveThread(threading.Thread):
        # A first design of django-thread (never released) did this: "clean up" in
        # start(), i.e. in the caller.
        def start(self) -> None:
            close_old_connections()
            super().start()

    class Seen(list[int]):
        def append_count(self) -> None:
            self.append(Order.objects.count())

    rows = []
    with connection_settings(CONN_MAX_AGE=0):
        for name, thread_cls in [
            ("threading", threading.Thread),
            ("close in start()", NaiveThread),
            ("django_thread", django_thread.Thread),
        ]:
            Order.objects.all().delete()
            seen = Seen()
            row = Row(name)
            try:
                with transaction.atomic():
                    Order.objects.create(number=1)
                    worker = thread_cls(target=seen.append_count)
                    worker.start()
                    worker.join()
                    Order.objects.create(number=2)
            except Exception as exc:
                row.record(exc)
            else:
                row.record(None)
            kept = Order.objects.count()
            row.detail = (
                f"the thread saw {seen[0] if seen else '?'} of the caller's "
                f"uncommitted rows; {kept} of 2 rows committed"
            )
            row.ok = kept == 2 if name != "close in start()" else kept < 2
            rows.append(row)
    return rows


def long_running_loop() -> list[Row]:
    """A worker loop that idles between iterations, across the server's idle timeout."""
    options, seconds = idle_timeout_options(connection.vendor)
    iterations = 20 if connection.vendor == "postgresql" else 5
    rows = {
        "plain loop": Row("plain loop"),
        "unit_of_work loop": Row("unit_of_work loop"),
    }
    lock = threading.Lock()

    def loop(row: Row, per_iteration: bool) -> None:
        for _ in range(iterations):
            if per_iteration:
                with django_thread.unit_of_work():
                    attempt(new_orders, row, lock)
            else:
                attempt(new_orders, row, lock)
            time.sleep(seconds * 1.6)  # nothing to do: idle

    with connection_settings(CONN_MAX_AGE=None, CONN_HEALTH_CHECKS=True, OPTIONS=options):
        threads = [
            threading.Thread(target=loop, args=(rows["plain loop"], False)),
            django_thread.Thread(target=loop, args=(rows["unit_of_work loop"], True)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    plain, ours = rows.values()
    plain.ok, ours.ok = plain.failed > 0, ours.failed == 0
    return [plain, ours]


SCENARIOS = [
    Scenario("idle-timeout", "The server drops idle connections", idle_timeout),
    Scenario("killed-sessions", "The server kills sessions mid-run", killed_sessions),
    Scenario("connection-limit", "Connections pile up past a limit", connection_limit),
    Scenario(
        "thread-in-atomic",
        "A thread started inside transaction.atomic()",
        thread_in_atomic,
        needs_server=False,
    ),
    Scenario(
        "long-running-loop",
        "A worker loop across the server's idle timeout",
        long_running_loop,
    ),
]
