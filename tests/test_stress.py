"""Stress: threads switching inside our code as on free-threaded Python.

``sys.setswitchinterval(1e-6)`` makes CPython hand the GIL over as often as it can, so
that a check-then-act left without its lock in the lifecycle, the pool or the task
backend is interleaved as it would be without a GIL. Each test then checks
what must hold whatever the interleaving: no exception in any thread, every write
made exactly once, no connection left on the server, and our per-thread records and
module-level state back to empty.

The default sizes keep this file under a minute per database on a small machine;
``DJANGO_THREAD_STRESS=full`` runs the full ones (32 threads x 500 units, 20,000 tasks).

It must be able to fail: ``DJANGO_THREAD_STRESS_BREAK=tasks|advised|turn|statement``
swaps that lock for one that locks nothing (the task backend's lock over its heaps and
results, the once-per-alias advice's, share_connections()'s turn or its statement lock),
and the tests that use it should then fail (``statement`` on MariaDB only: SQLite's and
psycopg's connections make a second thread wait, mysqlclient's refuses it). The switch
interval alone cannot get into the shortest sections: CPython switches threads at a
call or a loop's jump, never between ``if alias in advised`` and the
``advised.add(alias)`` acting on it. So a profile hook (``threading.setprofile``;
coverage uses ``settrace``) hands the GIL over right before each C call of ours that
changes a container (``set.add``, ``heappush``, ``list.append``...), and tests 2 and 4
make those races happen: threads reconnecting all at once (``advised``), and a client
polling the urgent task it enqueued while a worker takes it, which must never show half
of that (``tasks``). Run with ``-rP`` to see each test's counts.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import random
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any

import django
import pytest
from django.db import transaction
from django.test.utils import modify_settings
from django.utils import timezone

import django_thread
from django_thread import Thread, ThreadPoolExecutor, _connections, unit_of_work
from django_thread.testing import share_connections
from tests.conftest import ConnSettings, settle
from tests.server import ServerProbe
from tests.settings import VENDOR
from tests.testapp.models import Note

if TYPE_CHECKING:
    from django.tasks import TaskResult

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.stress]

FULL = os.environ.get("DJANGO_THREAD_STRESS", "").lower() == "full"


def size(full: int, default: int) -> int:
    return full if FULL else default


LANES = 32  # threads running units at once (test 1)
UNITS = size(500, 40)  # units per lane
# Threads reconnecting at once (test 2): more spread their arrivals over milliseconds.
RECONNECTERS = 8
RECONNECT_ROUNDS = size(500, 50)
POOL_THREADS = 16  # threads making pools at once (test 3)
POOLS = size(40, 6)  # pools per thread
ENQUEUERS = 16  # threads enqueueing tasks (test 4)
TASKS = size(20_000, 2_000)
URGENT = size(1_000, 100)  # of them enqueued one at a time and polled until run (test 4)
SHARERS = 8  # threads taking turns on a shared connection (test 5)
SHARED_UNITS = size(200, 40)
# Seconds before a run that has not ended is taken for a deadlock, not a speed limit: a
# full-size test runs for minutes on a loaded 2-core machine, and one that gives up
# leaves its threads writing into the next test's tables.
PATIENCE = size(3600, 300)

BREAK = os.environ.get("DJANGO_THREAD_STRESS_BREAK", "")
if BREAK not in ("", "tasks", "advised", "turn", "statement"):
    msg = f"DJANGO_THREAD_STRESS_BREAK must be tasks, advised, turn or statement, not {BREAK!r}"
    raise ValueError(msg)


class NoLock:
    """A lock that locks nothing, for DJANGO_THREAD_STRESS_BREAK (also under a Condition)."""

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return True

    def release(self) -> None:
        pass

    def _is_owned(self) -> bool:  # what Condition asks
        return True

    def __enter__(self) -> bool:
        return True

    def __exit__(self, *exc_info: object) -> None:
        pass


# -- watching every thread --------------------------------------------------------------


@dataclass
class Watch:
    """What went wrong anywhere while a stress test ran."""

    errors: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)  # the once-per-alias advice, as given
    records: dict[int, _connections._ThreadRecord] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text)

    def keep_record(self) -> None:
        """Keep the calling thread's record, to check it is empty once the thread ends."""
        rec = _connections.current_record()
        if rec is not None:
            with self.lock:
                self.records[id(rec)] = rec

    def assert_clean(self, probe: ServerProbe, baseline: int, done: int) -> None:
        assert self.errors == [], "\n".join(self.errors)
        left = [
            (rec.wrappers, rec.unit, rec.units, rec.shared, rec.callers, rec.requests)
            for rec in self.records.values()
            if rec.wrappers or rec.unit is not None or rec.units or rec.shared or rec.callers
        ]
        assert left == [], f"{len(left)} of {len(self.records)} thread records not empty"
        assert _connections.sharing == []
        after = settle(probe, baseline)
        print(  # for -rP: the counts of a run
            f"{done} units or tasks; {len(self.records)} thread records; "
            f"connections on the server: {baseline} before, {after} after"
        )
        assert after == baseline, probe.backend_ids()


class _Collect(logging.Handler):
    def __init__(self, watch: Watch) -> None:
        super().__init__(logging.WARNING)
        self.watch = watch

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "(django_thread.W001)" in message:  # the once-per-alias advice: counted
            with self.watch.lock:
                self.watch.advice.append(message)
        else:
            self.watch.error(f"{record.levelname} {record.threadName}: {message}")


OURS = os.path.dirname(django_thread.__file__) + os.sep  # what our co_filenames start with
# The names of the C methods that change what they are called on: a check-then-act's act.
ACTS = frozenset(
    {"add", "append", "appendleft", "clear", "discard", "extend", "get_nowait", "heappop"}
    | {"heappush", "insert", "pop", "popitem", "popleft", "put", "put_nowait", "remove"}
    | {"setdefault", "update"}
)


def switch_before_acting(frame: FrameType, event: str, arg: object) -> None:
    # Between a check and the C call that acts on it CPython never switches threads by
    # itself (no call or jump between them): hand the GIL over right before each such
    # call our code makes, as a free-threaded build could run another thread there.
    if (
        event == "c_call"
        and frame.f_code.co_filename.startswith(OURS)
        and getattr(arg, "__name__", None) in ACTS
    ):
        time.sleep(0)


@pytest.fixture
def watch() -> Iterator[Watch]:
    """Switch threads every microsecond, and before each change our code makes to a
    container; collect every thread's exception and warning."""
    watch = Watch()
    hook, interval = threading.excepthook, sys.getswitchinterval()
    profile, thread_profile = sys.getprofile(), threading.getprofile()

    def excepthook(args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread is not None else "?"
        where = traceback.extract_tb(args.exc_traceback)[-1:]  # the innermost line
        at = f" at {where[0].filename}:{where[0].lineno}" if where else ""
        watch.error(f"{name}: {args.exc_type.__name__}: {args.exc_value}{at}")

    handler = _Collect(watch)
    logger = logging.getLogger("django_thread")
    logger.addHandler(handler)
    threading.excepthook = excepthook
    sys.setswitchinterval(1e-6)
    threading.setprofile(switch_before_acting)  # in the threads started from now on
    sys.setprofile(switch_before_acting)  # and in this one
    try:
        yield watch
    finally:
        sys.setprofile(profile)
        threading.setprofile(thread_profile)
        sys.setswitchinterval(interval)
        threading.excepthook = hook
        logger.removeHandler(handler)
    # Said at most once per alias, however many threads reconnect at once.
    assert len(watch.advice) == len(set(watch.advice)), watch.advice


def start_and_join(threads: list[threading.Thread], timeout: float = PATIENCE) -> None:
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


@contextlib.contextmanager
def advice_unsaid() -> Iterator[None]:
    """Forget which aliases had the once-per-alias advice, so that threads race to give it."""
    saved_advised, saved_lock = set(_connections._advised), _connections._advised_lock
    _connections._advised.clear()
    if BREAK == "advised":
        _connections._advised_lock = NoLock()  # type: ignore[assignment]
    try:
        yield
    finally:
        _connections._advised.clear()
        _connections._advised.update(saved_advised)
        _connections._advised_lock = saved_lock


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


@pytest.mark.parametrize(
    ("policy", "app"),
    [
        pytest.param(*POLICIES[0].values, False, id="persistent-checks"),
        pytest.param(*POLICIES[0].values, True, id="persistent-checks-app"),
        pytest.param(*POLICIES[1].values, False, id="age0"),
    ],
)
def test_threads_starting_and_exiting_while_running_units(
    watch: Watch,
    conn_settings: ConnSettings,
    probe: ServerProbe,
    policy: dict[str, Any],
    app: bool,
) -> None:
    conn_settings(**policy)
    total = UNITS if policy["max_age"] is None else UNITS // 3  # a connect per unit
    assert written() == []  # the main thread's own connection: in the baseline
    baseline = probe.steady()
    texts: list[str] = []
    with (
        advice_unsaid(),
        modify_settings(INSTALLED_APPS={"append": "django_thread"} if app else {}),
    ):
        start_and_join(
            [
                threading.Thread(target=lane, args=(watch, n, total, texts), kwargs={"app": app})
                for n in range(LANES)
            ]
        )
    assert watch.errors == []
    assert len(texts) == LANES * total
    assert written() == sorted(texts)
    watch.assert_clean(probe, baseline, len(texts))


# -- 2. threads reconnecting at once: the advice given once ------------------------------


def reconnect(watch: Watch, barrier: threading.Barrier) -> None:
    """A unit per round, each opening a connection (CONN_MAX_AGE = 0): all at once."""
    try:
        for _ in range(RECONNECT_ROUNDS):
            with unit_of_work():
                Note.objects.count()
            barrier.wait()
    except BaseException:
        barrier.abort()  # the others stop too, rather than wait for this one
        raise
    watch.keep_record()


def test_threads_reconnecting_at_once_give_the_advice_once(
    watch: Watch, conn_settings: ConnSettings, probe: ServerProbe
) -> None:
    conn_settings(max_age=0, health_checks=False, **SQLITE)
    assert written() == []  # the main thread's own connection: in the baseline
    baseline = probe.steady()
    given: list[int] = []

    def next_round() -> None:  # in one thread, all others waiting: to be given anew
        given.append(len(watch.advice))
        watch.advice.clear()
        _connections._advised.clear()

    barrier = threading.Barrier(RECONNECTERS, action=next_round)
    with advice_unsaid():
        # Our Thread: the advice is for our threads' units, not a plain thread's.
        start_and_join(
            [Thread(target=reconnect, args=(watch, barrier)) for _ in range(RECONNECTERS)]
        )
    assert watch.errors == []
    # Each thread's first connection is no reconnect: the advice from the second round on.
    assert given == [0] + [1] * (RECONNECT_ROUNDS - 1), f"advice given per round: {given}"
    watch.assert_clean(probe, baseline, RECONNECTERS * RECONNECT_ROUNDS)


# -- 3. pools created, used and shut down from many threads at once ----------------------


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
        texts += outcomes(watch, prefix, futures)


def outcomes(watch: Watch, prefix: str, futures: list[concurrent.futures.Future[Any]]) -> list[str]:
    """The rows the tasks that ran say they wrote; their errors go to *watch*."""
    texts = []
    for future in futures:
        if future.cancelled():
            continue
        try:
            value = future.result()
        except Exception as exc:
            watch.error(f"{prefix}: {type(exc).__name__}: {exc}")
            continue
        if isinstance(value, str):
            texts += value.split("+")
    return texts


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
    watch.assert_clean(probe, baseline, len(texts))


# -- 4. django.tasks enqueued from many threads at once (Django 6.0+) --------------------

TASKS_BACKEND = "django_thread.tasks.ThreadPoolBackend"


WATCHING: list[Watch] = []  # the running test's Watch, for the tasks (JSON arguments only)


def write_note(text: str) -> str:
    """The task: one row, whose text no other task writes."""
    Note.objects.create(text=text)
    WATCHING[0].keep_record()
    return text


# What get_result() may show, (started, finished, workers) by status: each change to a
# task whole, as the pool's lock makes it, never half of one (RUNNING, no worker yet).
WHOLE = {"READY": (False, False, 0), "RUNNING": (True, False, 1), "SUCCESSFUL": (True, True, 1)}


def whole(watch: Watch, result: TaskResult[..., Any]) -> TaskResult[..., Any]:
    seen = (result.started_at is not None, result.finished_at is not None, len(result.worker_ids))
    if WHOLE.get(result.status) != seen:
        watch.error(f"task {result.id} seen half-changed: {result.status} with {seen}")
    return result


def await_urgent(watch: Watch, count: int, ids: dict[str, str]) -> None:
    """Enqueue *count* tasks at the highest priority, one at a time, each polled until it
    has run: so polls land while a worker takes it."""
    from django.tasks import default_task_backend, task  # noqa: PLC0415 - Django 6.0+
    from django.tasks.base import TASK_MAX_PRIORITY  # noqa: PLC0415

    job = task(write_note).using(priority=TASK_MAX_PRIORITY)
    for i in range(count):
        result = job.enqueue(f"urgent.{i}")
        ids[result.id] = f"urgent.{i}"
        while not whole(watch, default_task_backend.get_result(result.id)).is_finished:
            time.sleep(0)
    watch.keep_record()


def enqueue_many(watch: Watch, number: int, count: int, ids: dict[str, str]) -> None:
    """Enqueue *count* tasks in batches: some inside atomic() (handed over as it commits),
    some with a priority, some deferred by a few milliseconds; read some results back."""
    from django.tasks import default_task_backend, task  # noqa: PLC0415 - Django 6.0+

    rng = random.Random(2000 + number)
    job = task(write_note)
    i = 0
    while i < count:
        texts = [f"t{number}.{j}" for j in range(i, min(count, i + rng.randint(1, 50)))]
        i += len(texts)
        if rng.random() < 0.2:
            with unit_of_work(), transaction.atomic():
                results = [job.enqueue(text) for text in texts]
        else:
            options: dict[str, Any] = {"priority": rng.randint(-5, 5)}
            if rng.random() < 0.1:
                options["run_after"] = timezone.now() + timedelta(milliseconds=rng.randint(1, 50))
            results = [job.using(**options).enqueue(text) for text in texts]
        for text, result in zip(texts, results, strict=True):
            ids[result.id] = text
        for result in rng.sample(results, min(3, len(results))):  # while workers write
            whole(watch, default_task_backend.get_result(result.id))
    watch.keep_record()


@pytest.mark.skipif(django.VERSION < (6, 0), reason="django.tasks needs Django 6.0 or newer")
def test_tasks_enqueued_from_many_threads_each_run_once(
    watch: Watch, conn_settings: ConnSettings, probe: ServerProbe, settings: Any
) -> None:
    from django.tasks import TaskResultStatus, task_backends  # noqa: PLC0415

    from django_thread.tasks import ThreadPoolBackend  # noqa: PLC0415

    conn_settings(max_age=None, health_checks=True, **SQLITE)
    assert written() == []  # the main thread's own connection: in the baseline
    baseline = probe.steady()
    settings.TASKS = {
        "default": {
            "BACKEND": TASKS_BACKEND,
            "OPTIONS": {"MAX_WORKERS": 8, "MAX_RESULTS": TASKS + URGENT},
        }
    }
    backend = task_backends["default"]
    assert isinstance(backend, ThreadPoolBackend)
    pool = backend._pool
    if BREAK == "tasks":
        pool.lock = NoLock()  # type: ignore[assignment]
        pool.changed = threading.Condition(pool.lock)
    ids: dict[str, str] = {}
    WATCHING.append(watch)
    try:
        start_and_join(
            [
                (Thread if n % 2 else threading.Thread)(
                    target=enqueue_many, args=(watch, n, TASKS // ENQUEUERS, ids)
                )
                for n in range(ENQUEUERS)
            ]
            + [threading.Thread(target=await_urgent, args=(watch, URGENT, ids))]
        )
        expected = ENQUEUERS * (TASKS // ENQUEUERS) + URGENT
        assert len(ids) == expected
        deadline = time.monotonic() + PATIENCE
        pending = set(ids)
        while pending:
            assert time.monotonic() < deadline, f"{len(pending)} tasks never finished"
            pending = {i for i in pending if not whole(watch, backend.get_result(i)).is_finished}
            time.sleep(0.05)
        assert watch.errors == [], "\n".join([f"{len(watch.errors)} errors:", *watch.errors[:5]])
        results = [backend.get_result(i) for i in ids]
        not_successful = [
            (r.id, r.status, r.errors) for r in results if r.status != TaskResultStatus.SUCCESSFUL
        ]
        assert not_successful == []
        assert [r.id for r in results if len(r.worker_ids) != 1] == []  # each ran once
        assert [r.id for r in results if r.return_value != ids[r.id]] == []
        assert written() == sorted(ids.values())  # every row written exactly once
        # The pool's own books balance: nothing running, queued or counted as draining.
        deadline = time.monotonic() + 10
        while pool.draining and time.monotonic() < deadline:
            time.sleep(0.01)
        with pool.lock:
            assert (pool.draining, pool.running, pool.ready, pool.deferred) == (0, {}, [], [])
            assert len(pool.finished) == len(pool.results) == expected
    finally:
        backend.shutdown()
        WATCHING.clear()
    watch.assert_clean(probe, baseline, len(ids))


# -- 5. share_connections(): units in 8 threads take turns on the test's connection -------


@dataclass
class Turns:
    """How many units are inside the shared connection at once: never more than one."""

    inside: int = 0
    most: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def enter(self) -> None:
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)

    def leave(self) -> None:
        with self.lock:
            self.inside -= 1


def shared_unit(watch: Watch, turns: Turns, text: str) -> str:
    turns.enter()
    try:
        Note.objects.create(text=text)
        with transaction.atomic():  # a savepoint in the test's transaction
            Note.objects.create(text=f"{text}.s")
            Note.objects.filter(text=text).count()
    finally:
        turns.leave()
    watch.keep_record()
    return text


def share_in_turn(watch: Watch, turns: Turns, number: int, texts: list[str]) -> None:
    """Run units under share_connections(): outer units, or a pool's tasks."""
    if number % 2:
        with ThreadPoolExecutor(2) as pool:
            futures = [
                pool.submit(shared_unit, watch, turns, f"s{number}.{i}")
                for i in range(SHARED_UNITS)
            ]
        texts += outcomes(watch, f"s{number}", futures)
    else:
        for i in range(SHARED_UNITS):
            with unit_of_work():
                texts.append(shared_unit(watch, turns, f"s{number}.{i}"))
    watch.keep_record()


def test_units_share_the_tests_connection_in_turn(watch: Watch, probe: ServerProbe) -> None:
    assert written() == []
    baseline = probe.steady()
    turns = Turns()
    texts: list[str] = []
    with transaction.atomic():  # the test's transaction, as TestCase opens it
        Note.objects.create(text="test")
        # Our Thread's run() is one unit, holding the turn for all of its units: at full
        # size on a loaded machine, longer than a minute (seen on MariaDB, 3.12).
        with share_connections(timeout=PATIENCE):
            if BREAK in ("turn", "statement"):
                setattr(_connections.sharing[0], BREAK, NoLock())
            threads = [
                (Thread if n % 4 == 0 else threading.Thread)(
                    target=share_in_turn, args=(watch, turns, n, texts)
                )
                for n in range(SHARERS)
            ]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + PATIENCE
            while any(thread.is_alive() for thread in threads):
                assert time.monotonic() < deadline, "deadlock?"
                Note.objects.count()  # the test's own statements, between the units'
        assert watch.errors == [], "\n".join(watch.errors)
        assert turns.most == 1
        assert written() == sorted(["test", *texts, *(f"{t}.s" for t in texts)])
        assert len(texts) == SHARERS * SHARED_UNITS
        transaction.set_rollback(True)
    assert written() == []  # the units' writes were the test's, and rolled back with it
    watch.assert_clean(probe, baseline, len(texts))
