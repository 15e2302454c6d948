"""Stress: threads switching inside our code as on free-threaded Python.

``sys.setswitchinterval(1e-6)`` makes CPython hand the GIL over after almost every
bytecode, so that a check-then-act left without its lock in the lifecycle, the pool
or the task backend is interleaved as it would be without a GIL. Each test then checks
what must hold whatever the interleaving: no exception in any thread, every write
made exactly once, no connection left on the server, and our per-thread records and
module-level state back to empty.

The default sizes keep this file under a minute per database on a small machine;
``DJANGO_THREAD_STRESS=full`` runs the full ones (32 threads x 500 units, 20,000 tasks).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import django
import pytest
from django.db import connections, transaction
from django.test.utils import modify_settings

from django_thread import Thread, ThreadPoolExecutor, _connections, unit_of_work
from django_thread.testing import share_connections
from tests.conftest import ConnSettings, settle
from tests.server import ServerProbe
from tests.settings import VENDOR
from tests.testapp.models import Note

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

FULL = os.environ.get("DJANGO_THREAD_STRESS", "").lower() == "full"


def size(full: int, default: int) -> int:
    return full if FULL else default


LANES = 32  # threads running units at once (test 1)
UNITS = size(500, 60)  # units per lane
POOL_THREADS = 16  # threads making pools at once (test 2)
POOLS = size(40, 8)  # pools per thread
ENQUEUERS = 16  # threads enqueueing tasks (test 3)
TASKS = size(20_000, 3_000)
SHARERS = 8  # threads taking turns on a shared connection (test 4)
SHARED_UNITS = size(200, 40)


# -- watching every thread --------------------------------------------------------------


@dataclass
class Watch:
    """What went wrong anywhere while a stress test ran."""

    errors: list[str] = field(default_factory=list)
    records: list[_connections._ThreadRecord] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text)

    def keep_record(self) -> None:
        """Keep the calling thread's record, to check it is empty once the thread ends."""
        rec = _connections.current_record()
        if rec is not None:
            with self.lock:
                self.records.append(rec)

    def assert_clean(self, probe: ServerProbe, baseline: int) -> None:
        assert self.errors == []
        left = [
            (rec.wrappers, rec.unit, rec.units, rec.shared, rec.callers, rec.requests)
            for rec in self.records
            if rec.wrappers or rec.unit is not None or rec.units or rec.shared or rec.callers
        ]
        assert left == [], f"{len(left)} of {len(self.records)} thread records not empty"
        assert _connections.sharing == []
        assert settle(probe, baseline) == baseline, probe.backend_ids()


class _Collect(logging.Handler):
    def __init__(self, watch: Watch) -> None:
        super().__init__(logging.WARNING)
        self.watch = watch
        self.advice: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "(django_thread.W001)" in message:  # the once-per-alias advice: counted
            self.advice.append(message)
        else:
            self.watch.error(f"{record.levelname} {record.threadName}: {message}")


@pytest.fixture
def watch() -> Iterator[Watch]:
    """Switch threads every microsecond; collect every thread's exception and warning."""
    watch = Watch()
    hook, interval = threading.excepthook, sys.getswitchinterval()

    def excepthook(args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread is not None else "?"
        watch.error(f"{name}: {args.exc_type.__name__}: {args.exc_value}")

    handler = _Collect(watch)
    logger = logging.getLogger("django_thread")
    logger.addHandler(handler)
    threading.excepthook = excepthook
    sys.setswitchinterval(1e-6)
    try:
        yield watch
    finally:
        sys.setswitchinterval(interval)
        threading.excepthook = hook
        logger.removeHandler(handler)
    # Said at most once per alias, however many threads reconnect at once.
    assert len(handler.advice) == len(set(handler.advice)), handler.advice


def start_and_join(threads: list[threading.Thread], timeout: float = 300) -> None:
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threads if t.is_alive()]
    assert stuck == [], f"deadlock? still running: {stuck}"


def written() -> list[str]:
    """The text of every row written, each once if nothing ran twice."""
    return sorted(Note.objects.values_list("text", flat=True))


# SQLite has one writer at a time: 32 threads wait their turn longer than its default
# 5 s, and a deferred transaction that must upgrade to a write lock fails at once.
SQLITE = {"timeout": 120, "transaction_mode": "IMMEDIATE"} if VENDOR == "sqlite" else {}

POLICIES = [
    pytest.param({"max_age": None, "health_checks": True, **SQLITE}, id="persistent-checks"),
    pytest.param({"max_age": 0, "health_checks": False, **SQLITE}, id="age0"),
]


# -- 1. threads that start and exit all the time, each running units ---------------------


def units(watch: Watch, lane: int, first: int, count: int, texts: list[str]) -> None:
    """*count* units of work in the calling thread: inserts, reads, atomic blocks."""
    for i in range(first, first + count):
        with unit_of_work():
            text = f"u{lane}.{i}"
            if i % 3 == 0:
                with transaction.atomic():
                    Note.objects.create(text=text)
                    Note.objects.filter(text=text).exists()
            else:
                Note.objects.create(text=text)
            with unit_of_work():  # inner: changes nothing
                Note.objects.count()
            texts.append(text)
    watch.keep_record()


def bare_queries(watch: Watch, lane: int, first: int, count: int, texts: list[str]) -> None:
    """The same writes without unit_of_work: the installed app closes them at exit."""
    for i in range(first, first + count):
        text = f"u{lane}.{i}"
        Note.objects.create(text=text)
        texts.append(text)
    watch.keep_record()


def lane(watch: Watch, number: int, total: int, texts: list[str], *, app: bool) -> None:
    """Run *total* units in short-lived threads, one after another, of every kind."""
    rng = random.Random(number)
    done = 0
    kinds: list[tuple[type[threading.Thread], Callable[..., None]]] = [
        (Thread, units),
        (threading.Thread, units),
    ]
    if app:
        kinds.append((threading.Thread, bare_queries))
    while done < total:
        count = min(rng.randint(1, 12), total - done)
        cls, body = rng.choice(kinds)
        thread = cls(target=body, args=(watch, number, done, count, texts))
        thread.start()
        thread.join()
        done += count


@pytest.mark.parametrize("app", [False, True], ids=["", "app"])
@pytest.mark.parametrize("policy", POLICIES)
def test_threads_starting_and_exiting_while_running_units(
    watch: Watch,
    conn_settings: ConnSettings,
    probe: ServerProbe,
    policy: dict[str, Any],
    app: bool,  # noqa: FBT001
) -> None:
    conn_settings(**policy)
    total = UNITS if policy["max_age"] is None else UNITS // 3  # a connect per unit
    assert written() == []  # the main thread's own connection: in the baseline
    baseline = probe.steady()
    texts: list[str] = []
    saved_advised = set(_connections._advised)
    _connections._advised.clear()  # so that every run races to give the advice
    try:
        with modify_settings(INSTALLED_APPS={"append": "django_thread"} if app else {}):
            start_and_join(
                [
                    threading.Thread(
                        target=lane, args=(watch, n, total, texts), kwargs={"app": app}
                    )
                    for n in range(LANES)
                ]
            )
    finally:
        _connections._advised.clear()
        _connections._advised.update(saved_advised)
    assert watch.errors == []
    assert len(texts) == LANES * total
    assert written() == sorted(texts)
    watch.assert_clean(probe, baseline)


# -- 2. pools created, used and shut down from many threads at once ----------------------


def insert(watch: Watch, text: str) -> str:
    Note.objects.create(text=text)
    watch.keep_record()
    return text


def nested_pool(watch: Watch, text: str) -> str:
    """A task that makes a pool of its own, and drains it as it shuts it down."""
    pool = ThreadPoolExecutor(2)
    inner = [pool.submit(insert, watch, f"{text}.{i}") for i in range(3)]
    pool.shutdown(wait=True, cancel_futures=True)
    insert(watch, text)
    return "+".join([text, *(f.result() for f in inner if not f.cancelled())])


def make_pools(watch: Watch, number: int, texts: list[str]) -> None:
    """Make pools one after another, each used a little and shut down a different way."""
    rng = random.Random(1000 + number)
    for p in range(POOLS):
        prefix = f"p{number}.{p}"
        ending = rng.choice(["with", "cancel", "no-wait", "nested"])
        pool = ThreadPoolExecutor(rng.randint(1, 4))
        futures: list[concurrent.futures.Future[Any]] = []
        try:
            futures += [pool.submit(insert, watch, f"{prefix}.{i}") for i in range(6)]
            futures += [pool.submit(Note.objects.count) for _ in range(2)]
            if ending == "nested":
                futures.append(pool.submit(nested_pool, watch, f"{prefix}.n"))
            if ending != "cancel":
                texts.extend(pool.map(insert, [watch] * 4, [f"{prefix}.m{i}" for i in range(4)]))
            else:
                futures += [pool.submit(insert, watch, f"{prefix}.c{i}") for i in range(8)]
        finally:
            if ending == "cancel":
                pool.shutdown(wait=True, cancel_futures=True)
            elif ending == "no-wait":
                workers = list(pool._threads)
                pool.shutdown(wait=False)
                for worker in workers:
                    worker.join()
            else:
                pool.shutdown()
        for future in futures:
            if future.cancelled():
                continue
            try:
                value = future.result()
            except Exception as exc:  # noqa: BLE001 - reported, not raised in a thread
                watch.error(f"{prefix}: {type(exc).__name__}: {exc}")
                continue
            if isinstance(value, str):
                texts.extend(value.split("+"))


@pytest.mark.parametrize("policy", POLICIES)
def test_pools_made_used_and_shut_down_from_many_threads(
    watch: Watch, conn_settings: ConnSettings, probe: ServerProbe, policy: dict[str, Any]
) -> None:
    conn_settings(**policy)
    assert written() == []  # the main thread's own connection: in the baseline
    baseline = probe.steady()
    texts: list[str] = []
    makers: list[threading.Thread] = [
        (Thread if n % 2 else threading.Thread)(target=make_pools, args=(watch, n, texts))
        for n in range(POOL_THREADS)
    ]
    start_and_join(makers)
    assert watch.errors == []
    assert written() == sorted(texts)
    watch.assert_clean(probe, baseline)
