"""Benchmarks: django_thread against the stdlib, always as a ratio measured in the same run.

    python -m tests.benchmark                 # the full suite (several minutes)
    python -m tests.benchmark --quick         # a few seconds: checks that it runs
    python -m tests.benchmark --publish       # full suite, then update docs/benchmarks/

Each measurement alternates the two implementations (A B, B A, A B ...) for several
rounds, each run starting with the database server at rest, and reports the median of
the per-round ratios (ours / stdlib) with its 95% interval; a row with a target gets
rounds until that interval is narrow enough to judge the median against it. Servers
that cannot be reached are skipped with the reason. Results go to a JSON file.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import functools
import gc
import json
import math
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.server import ServerProbe

ROOT = Path(__file__).resolve().parent.parent
DATABASE_NAME = "django_thread_bench"  # its own database: never the tests' ones


def configure(vendors: list[str]) -> list[str]:
    """Configure Django with one alias per reachable vendor; return those aliases."""
    import django  # noqa: PLC0415
    from django.conf import settings  # noqa: PLC0415

    from tests.settings import database  # noqa: PLC0415

    databases: dict[str, Any] = {}
    for vendor in vendors:
        db = database(DATABASE_NAME, vendor)
        if vendor == "sqlite":
            db["NAME"] = str(ROOT / ".bench" / "bench.sqlite3")
            Path(db["NAME"]).parent.mkdir(exist_ok=True)
        databases[vendor] = db
    settings.configure(
        DATABASES={"default": databases[vendors[0]], **databases},
        # Installed as users are told to: it closes every thread's connections at exit.
        INSTALLED_APPS=["tests.testapp", "django_thread"],
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        USE_TZ=True,
    )
    django.setup()
    reachable = []
    for vendor in vendors:
        reason = prepare(vendor)
        if reason:
            print(f"skipping {vendor}: {reason}", file=sys.stderr)
        else:
            reachable.append(vendor)
    return reachable


def prepare(alias: str, name: str = DATABASE_NAME, rows: int = 100) -> str | None:
    """Create database *name* and its table, with *rows* rows, on *alias*; why not, if it cannot."""
    from django.db import connections  # noqa: PLC0415

    from tests.server import probe_for  # noqa: PLC0415
    from tests.testapp.models import Note  # noqa: PLC0415

    conn = connections[alias]
    try:
        probe = probe_for(alias)
        probe.create_database(name)
        probe.close()
        if Note._meta.db_table not in conn.introspection.table_names():
            with conn.schema_editor() as editor:
                editor.create_model(Note)
        if not Note.objects.using(alias).exists():
            Note.objects.using(alias).bulk_create(Note(text=f"n{i}") for i in range(rows))
    except Exception as exc:
        return str(exc).strip().splitlines()[0]
    finally:
        conn.close()
    return None


# --- what is measured -------------------------------------------------------------------


@dataclasses.dataclass
class Measurement:
    benchmark: str  # "no-op tasks", "short threads", "ORM tasks"
    database: str  # the vendor, or "none" when the work does not touch it
    setting: str  # the connection setting, "" where it does not apply
    units: int
    ours: list[float] = dataclasses.field(default_factory=list)  # seconds, per round
    stdlib: list[float] = dataclasses.field(default_factory=list)
    peak: dict[str, int] = dataclasses.field(default_factory=dict)  # server connections
    final: dict[str, int] = dataclasses.field(default_factory=dict)
    checks_per_unit: float | None = None  # health-check pings per unit, ours

    @property
    def ratios(self) -> list[float]:
        return [o / s for o, s in zip(self.ours, self.stdlib, strict=True)]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def interval(self) -> tuple[float, float]:
        """A 95% confidence interval for the median ratio.

        It assumes nothing about the noise but that rounds are independent: the number
        of rounds whose ratio falls below the true median is binomial(n, 1/2), so the
        order statistics n/2 -/+ 0.98 sqrt(n) (1.96 of its standard deviations) bound
        the median 95% of the time.
        """
        ratios = sorted(self.ratios)
        n = len(ratios)
        spread = 0.98 * math.sqrt(n)
        low = max(round(n / 2 - spread), 1)
        high = min(round(n / 2 + spread + 1), n)
        return ratios[low - 1], ratios[high - 1]

    @property
    def target(self) -> float | None:
        return TARGETS.get((self.benchmark, self.setting))

    def as_dict(self) -> dict[str, Any]:
        low, high = self.interval
        return {
            **dataclasses.asdict(self),
            "ratio": round(self.ratio, 4),
            "ratio_min": round(min(self.ratios), 4),
            "ratio_max": round(max(self.ratios), 4),
            "interval": [round(low, 4), round(high, 4)],
            "target": self.target,
        }


# The ratios we hold ourselves to (see docs/benchmarks.md), by (benchmark, setting).
TARGETS = {
    ("no-op tasks", ""): 1.10,
    ("short threads", ""): 1.10,
    ("ORM tasks", "CONN_MAX_AGE=None"): 1.03,
    ("ORM tasks", "CONN_MAX_AGE=60"): 1.03,
    ("ORM tasks", "native pool (CONN_MAX_AGE=0)"): 1.15,
    ("ORM tasks", "CONN_MAX_AGE=None, checks, window 0.5 s"): 1.03,
    ("ORM tasks", "CONN_MAX_AGE=60, checks, window 0.5 s"): 1.03,
}


def noop() -> None:
    pass


def orm_query(alias: str) -> int:
    from tests.testapp.models import Note  # noqa: PLC0415

    return Note.objects.using(alias).filter(text="n1").count()


def noop_tasks(executor: type[concurrent.futures.ThreadPoolExecutor], n: int) -> None:
    with executor(max_workers=4) as pool:
        concurrent.futures.wait([pool.submit(noop) for _ in range(n)])


def inner_unit_tasks(inner: bool, n: int) -> None:
    """No-op tasks on our pool, each calling a @unit_of_work helper (inner) or not."""
    import django_thread  # noqa: PLC0415

    helper = django_thread.unit_of_work(noop) if inner else noop
    with django_thread.ThreadPoolExecutor(max_workers=4) as pool:
        concurrent.futures.wait([pool.submit(helper) for _ in range(n)])


def short_threads(thread: type[threading.Thread], n: int) -> None:
    for _ in range(n):
        worker = thread(target=noop)
        worker.start()
        worker.join()


def orm_query_like_a_request(alias: str) -> int:
    """orm_query() wrapped the way Django wraps a view: close_old_connections() around it."""
    from django.db import close_old_connections  # noqa: PLC0415

    close_old_connections()
    try:
        return orm_query(alias)
    finally:
        close_old_connections()


def orm_tasks(
    executor: type[concurrent.futures.ThreadPoolExecutor],
    n: int,
    alias: str,
    task: Callable[[str], int] = orm_query,
) -> None:
    with executor(max_workers=4) as pool:
        futures = [pool.submit(task, alias) for _ in range(n)]
        if any(f.result() != 1 for f in futures):
            raise AssertionError("a task returned the wrong count")


class PeakSampler:
    """Samples the server's connection count from a thread of its own."""

    def __init__(self, alias: str) -> None:
        from tests.server import probe_for  # noqa: PLC0415

        self.probe = probe_for(alias)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-sampler")

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.probe.count())

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def final(self) -> int:
        """The count once the run is over (a server sees closed sockets a moment late)."""
        self.__exit__()  # the probe's connection is not for two threads at once
        return self.probe.drained(0.5)


def alternate(
    measurement: Measurement,
    rounds: int,
    run: Callable[[str], None],
    alias: str | None,
    after_run: Callable[[], None] = lambda: None,
    *,
    precision: float | None = None,
) -> Measurement:
    """Time run("ours") and run("stdlib") alternately, *rounds* times each.

    With *precision*, a measurement with a target goes on past *rounds*, up to
    MAX_ROUNDS, until its median's 95% interval is no wider than the median -/+
    *precision*: as many rounds as this machine's noise needs for the median to be
    judged against the target. (When to stop depends on the spread of the ratios only,
    never on their median.)

    *after_run* runs after each run, outside the timing. Every run starts from rest
    (see _at_rest), and the side that goes first changes every round (A B, B A, ...),
    so that neither side always inherits what the other left or a drift in the
    machine's speed.
    """
    from tests.server import probe_for  # noqa: PLC0415

    def more() -> bool:
        done = len(measurement.ours)
        if done < rounds:
            return True
        if precision is None or measurement.target is None or done >= MAX_ROUNDS:
            return False
        low, high = measurement.interval
        return (high - low) / 2 > precision

    probe = None if alias is None else probe_for(alias)
    try:
        while more():
            round_ = len(measurement.ours)
            for side in SIDES if round_ % 2 == 0 else SIDES[::-1]:
                _at_rest(probe)
                with _sampling(alias) as sampler:
                    started = time.perf_counter()
                    run(side)
                    elapsed = time.perf_counter() - started
                    if sampler is not None:
                        final = sampler.final()
                        measurement.peak[side] = max(measurement.peak.get(side, 0), sampler.peak)
                        measurement.final[side] = final
                getattr(measurement, side).append(elapsed)
                after_run()
    finally:
        if probe is not None:
            probe.close()
    gc.collect()
    return measurement


SIDES = ("ours", "stdlib")
MAX_ROUNDS = 81  # for a row with a target, however noisy the machine


def _at_rest(probe: ServerProbe | None) -> None:
    """Before a run: nothing the previous run left is still being cleaned up.

    The stdlib's workers leave their connections open until the garbage collector
    frees them, and a server takes a moment to tear a closed session down (a
    PostgreSQL backend process exits). Collected here, inside the next run's timing,
    that work would be charged to whichever side runs next: so collect it, and wait
    until the server no longer lists any of the benchmark's sessions.
    """
    gc.collect()
    if probe is not None:
        probe.drained(2.0)


@contextlib.contextmanager
def _sampling(alias: str | None) -> Iterator[PeakSampler | None]:
    if alias is None:
        yield None
        return
    sampler = PeakSampler(alias)
    try:
        with sampler:
            yield sampler
    finally:
        sampler.probe.close()


@dataclasses.dataclass(frozen=True)
class Setting:
    label: str
    max_age: int | None
    health_checks: bool
    pool: bool = False
    window: float = 0.0  # DJANGO_THREAD["HEALTH_CHECK_WINDOW"]
    # The stdlib side's tasks tidy like a request (close_old_connections() around
    # each): what a hand-written pool that follows Django's rules would pay.
    stdlib_like_requests: bool = False


SETTINGS = [
    Setting("CONN_MAX_AGE=None", None, health_checks=False),
    Setting("CONN_MAX_AGE=None, checks", None, health_checks=True),
    Setting("CONN_MAX_AGE=60", 60, health_checks=False),
    Setting("CONN_MAX_AGE=None, checks, window 0.5 s", None, health_checks=True, window=0.5),
    Setting("CONN_MAX_AGE=60, checks", 60, health_checks=True),
    Setting("CONN_MAX_AGE=60, checks, window 0.5 s", 60, health_checks=True, window=0.5),
    Setting("CONN_MAX_AGE=0", 0, health_checks=False),
    Setting("CONN_MAX_AGE=0, checks", 0, health_checks=True),
    Setting("native pool (CONN_MAX_AGE=0)", 0, health_checks=False, pool=True),
    Setting("native pool (CONN_MAX_AGE=0), checks", 0, health_checks=True, pool=True),
    Setting(
        "native pool (CONN_MAX_AGE=0), checks, window 0.5 s",
        0,
        health_checks=True,
        pool=True,
        window=0.5,
    ),
    Setting(
        "native pool, stdlib tidying like a request",
        0,
        health_checks=False,
        pool=True,
        stdlib_like_requests=True,
    ),
]


@contextlib.contextmanager
def connection_setting(alias: str, setting: Setting) -> Iterator[None]:
    from django.db import connections  # noqa: PLC0415
    from django.test.utils import override_settings  # noqa: PLC0415

    import django_thread  # noqa: PLC0415

    db = connections.settings[alias]
    saved = dict(db)
    db["CONN_MAX_AGE"] = setting.max_age
    db["CONN_HEALTH_CHECKS"] = setting.health_checks
    if setting.pool:
        pool: dict[str, Any] = {"min_size": 4, "max_size": 4}
        if setting.window:
            pool["check"] = django_thread.check_pooled_connection
        db["OPTIONS"] = {**db["OPTIONS"], "pool": pool}
    try:
        with override_settings(DJANGO_THREAD={"HEALTH_CHECK_WINDOW": setting.window}):
            yield
    finally:
        if setting.pool:
            connections[alias].close_pool()  # type: ignore[attr-defined]
        db.clear()
        db.update(saved)


def _nothing() -> None:
    pass


def _orm_side(
    executors: dict[str, type[concurrent.futures.ThreadPoolExecutor]],
    queries: int,
    vendor: str,
    setting: Setting,
    side: str,
) -> None:
    like_requests = side == "stdlib" and setting.stdlib_like_requests
    task = orm_query_like_a_request if like_requests else orm_query
    orm_tasks(executors[side], queries, vendor, task)


def run_suite(vendors: list[str], quick: bool) -> list[Measurement]:
    import django  # noqa: PLC0415
    from django.db import connections  # noqa: PLC0415

    import django_thread  # noqa: PLC0415
    from django_thread.checks import POOL_CHECK_DJANGO  # noqa: PLC0415
    from tests.faults import counting_pings  # noqa: PLC0415

    # Thread start-up time is noisy (the OS schedules them), and so is a server round
    # trip: more rounds there, so that a 3% difference is not lost in the spread. A row
    # with a target goes on until its median is known to within 1% (see alternate()).
    rounds, thread_rounds, orm_rounds = (2, 2, 2) if quick else (9, 21, 21)
    precision = None if quick else 0.01
    noops, threads, queries = (2_000, 100, 200) if quick else (20_000, 1_000, 2_000)
    executors = {
        "ours": django_thread.ThreadPoolExecutor,
        "stdlib": concurrent.futures.ThreadPoolExecutor,
    }
    thread_classes = {"ours": django_thread.Thread, "stdlib": threading.Thread}
    results = [
        alternate(
            Measurement("no-op tasks", "none", "", noops),
            rounds,
            lambda side: noop_tasks(executors[side], noops),
            None,
            precision=precision,
        ),
        alternate(
            Measurement("short threads", "none", "", threads),
            thread_rounds,
            lambda side: short_threads(thread_classes[side], threads),
            None,
            precision=precision,
        ),
    ]
    # What nesting costs: a task calling a @unit_of_work helper, against the same task
    # calling the bare helper, both on our pool (the "stdlib" side is the bare one).
    results.append(
        alternate(
            Measurement("inner unit in a task", "none", "", noops),
            rounds,
            lambda side: inner_unit_tasks(side == "ours", noops),
            None,
        )
    )
    _report(results[-3:])
    for vendor in vendors:
        if vendor == "sqlite":
            continue  # the DB-bound comparison is about servers
        for setting in SETTINGS:
            if setting.pool and vendor != "postgresql":
                continue
            if setting.pool and setting.window and django.VERSION < POOL_CHECK_DJANGO:
                continue  # Django 5.2 and 6.0 refuse check_pooled_connection
            with connection_setting(vendor, setting):
                measurement = alternate(
                    Measurement("ORM tasks", vendor, setting.label, queries),
                    orm_rounds,
                    functools.partial(_orm_side, executors, queries, vendor, setting),
                    vendor,
                    # A stdlib worker never gives its pooled connection back (nothing
                    # closes it), so after one stdlib run the pool is exhausted and
                    # the next run would wait for its timeout: a fresh pool per run.
                    after_run=(
                        connections[vendor].close_pool  # type: ignore[attr-defined]
                        if setting.pool
                        else _nothing
                    ),
                    precision=precision,
                )
                if setting.health_checks and not setting.pool:
                    with counting_pings(vendor) as calls:
                        orm_tasks(django_thread.ThreadPoolExecutor, queries, vendor)
                    measurement.checks_per_unit = calls[0] / queries
            results.append(measurement)
            _report(results[-1:])
    return results


# --- output -----------------------------------------------------------------------------

COLUMNS = (
    "benchmark",
    "database",
    "setting",
    "units",
    "ratio",
    "95% interval",
    "rounds",
    "ours s",
    "stdlib s",
    "peak ours/std",
    "final ours/std",
    "checks/unit",
)


def _row(m: Measurement) -> tuple[str, ...]:
    def pair(d: dict[str, int]) -> str:
        return f"{d['ours']}/{d['stdlib']}" if d else "-"

    return (
        m.benchmark,
        m.database,
        m.setting or "-",
        str(m.units),
        f"{m.ratio:.2f}x",
        "{:.2f}-{:.2f}".format(*m.interval),
        str(len(m.ratios)),
        f"{statistics.median(m.ours):.3f}",
        f"{statistics.median(m.stdlib):.3f}",
        pair(m.peak),
        pair(m.final),
        "-" if m.checks_per_unit is None else f"{m.checks_per_unit:.2f}",
    )


def table(results: list[Measurement], markdown: bool = False) -> str:
    rows = [COLUMNS, *map(_row, results)]
    if markdown:
        lines = ["| " + " | ".join(row) + " |" for row in rows]
        lines.insert(1, "|" + "|".join(" --- " for _ in COLUMNS) + "|")
        return "\n".join(lines) + "\n"
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _report(results: list[Measurement]) -> None:
    for m in results:
        print(" | ".join(_row(m)), file=sys.stderr, flush=True)


def environment(vendors: list[str]) -> dict[str, Any]:
    import django  # noqa: PLC0415
    from django.db import connections  # noqa: PLC0415

    versions = {}
    for vendor in vendors:
        conn = connections[vendor]
        if conn.vendor == "sqlite":
            import sqlite3  # noqa: PLC0415

            versions[vendor] = f"SQLite {sqlite3.sqlite_version}"
        else:
            with conn.cursor() as cursor:
                cursor.execute("SELECT version()")
                versions[vendor] = str(cursor.fetchone()[0]).split(" on ")[0]
            conn.close()
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "python": platform.python_version(),
        "django": django.get_version(),
        "databases": versions,
        "date": time.strftime("%Y-%m-%d"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small and fast: CI's check")
    parser.add_argument("--databases", default="sqlite,postgresql,mariadb")
    parser.add_argument("--json", type=Path, default=ROOT / ".bench" / "results.json")
    parser.add_argument(
        "--publish", action="store_true", help="also write docs/benchmarks/ (table and chart)"
    )
    args = parser.parse_args(argv)

    vendors = configure(args.databases.split(","))
    results = run_suite(vendors, quick=args.quick)
    document = {
        "environment": environment(vendors),
        "quick": args.quick,
        "results": [m.as_dict() for m in results],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2) + "\n")
    print(table(results))
    print(f"results written to {args.json}")
    if args.publish:
        from tests.benchmark_chart import publish  # noqa: PLC0415

        publish(args.json, ROOT / "docs" / "benchmarks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
