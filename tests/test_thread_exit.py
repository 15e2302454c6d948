"""Threads we do not create: their connections are closed when they end.

For every thread that ran a unit_of_work, and for every thread at all when the
``django_thread`` app is installed. Each scenario runs first the plain way, to show
it leaks (the garbage collector is off, as it often is for long stretches), then
with django-thread, on the server's own count.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.test.utils import modify_settings

from django_thread import Thread, ThreadPoolExecutor, unit_of_work
from tests.conftest import VENDOR, settle
from tests.server import ServerProbe
from tests.work import query

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_gc")]

Work = Callable[[], object]


def plain_thread(work: Work) -> None:
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()


def timer(work: Work) -> None:
    thread = threading.Timer(0.001, work)
    thread.start()
    thread.join()


def to_thread(work: Work) -> None:
    async def main() -> None:
        await asyncio.gather(*(asyncio.to_thread(work) for _ in range(3)))

    asyncio.run(main())


def run_in_executor(work: Work) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(None, work) for _ in range(3)))

    asyncio.run(main())


def sync_to_async_not_thread_sensitive(work: Work) -> None:
    async def main() -> None:
        run = sync_to_async(work, thread_sensitive=False)
        await asyncio.gather(*(run() for _ in range(3)))

    asyncio.run(main())


def stdlib_pool(work: Work) -> None:
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        for future in [pool.submit(work) for _ in range(6)]:
            future.result()


SCENARIOS = [
    plain_thread,
    timer,
    to_thread,
    run_in_executor,
    sync_to_async_not_thread_sensitive,
    stdlib_pool,
]


@contextmanager
def app_installed() -> Iterator[None]:
    with modify_settings(INSTALLED_APPS={"append": "django_thread"}):
        yield


def leaked(probe: ServerProbe, baseline: int, scenario: Callable[[Work], None], work: Work) -> int:
    """Run *scenario*; how many connections it left open, before any collection."""
    scenario(work)
    left = settle(probe, baseline, timeout=1.0) - baseline
    with warnings.catch_warnings():  # the drivers warn about sockets closed by GC
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    assert settle(probe, baseline) == baseline
    return left


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_installed_app_closes_every_threads_connections_at_exit(
    conn_settings: Any, probe: ServerProbe, scenario: Callable[[Work], None]
) -> None:
    conn_settings(max_age=60)
    baseline = probe.steady()

    assert leaked(probe, baseline, scenario, query) >= 1  # plain: left for the collector
    with app_installed():
        assert leaked(probe, baseline, scenario, query) == 0


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_unit_of_work_closes_its_threads_connections_at_exit(
    conn_settings: Any, probe: ServerProbe, scenario: Callable[[Work], None]
) -> None:
    # No app: the thread is armed by having run a unit of work.
    conn_settings(max_age=60)
    baseline = probe.steady()

    assert leaked(probe, baseline, scenario, query) >= 1
    assert leaked(probe, baseline, scenario, unit_of_work(query)) == 0


def test_thread_exit_leaves_shared_connections_open(conn_settings: Any) -> None:
    # LiveServerTestCase shares the test thread's connection with its server thread;
    # the thread that ends must not close what another thread still uses.
    conn_settings(max_age=60)
    main = connections["default"]
    query()
    main.inc_thread_sharing()
    try:

        def use_shared() -> None:
            connections["default"] = main
            query()

        with app_installed():
            plain_thread(unit_of_work(use_shared))
        assert main.connection is not None
        query()
    finally:
        main.dec_thread_sharing()


@pytest.mark.skipif(VENDOR != "postgresql", reason="assume_role is PostgreSQL's")
@pytest.mark.parametrize("kind", ["stdlib", "Thread", "pool"])
def test_a_connection_whose_set_up_failed_is_closed_too(
    conn_settings: Any, probe: ServerProbe, kind: str
) -> None:
    # The socket opens, then SET ROLE fails: Django never sends connection_created,
    # yet the wrapper keeps the open socket.
    conn_settings(max_age=60, assume_role="django_thread_no_such_role")
    baseline = probe.steady()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            query()
        except Exception as exc:
            errors.append(exc)

    if kind == "pool":
        with ThreadPoolExecutor(1) as pool:
            pool.submit(work).result()
    else:
        thread = threading.Thread(target=work) if kind == "stdlib" else Thread(target=work)
        thread.start()
        thread.join()

    assert "django_thread_no_such_role" in str(errors[0])
    left = settle(probe, baseline, timeout=1.0) - baseline
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    assert left == (1 if kind == "stdlib" else 0)


@pytest.mark.parametrize(
    ("cls", "left"),
    [(ThreadPoolExecutor, 0), (concurrent.futures.ThreadPoolExecutor, 1)],
    ids=["django_thread", "stdlib"],
)
def test_done_callbacks_after_a_failing_initializer_leave_nothing(
    conn_settings: Any,
    probe: ServerProbe,
    caplog: pytest.LogCaptureFixture,
    cls: type[concurrent.futures.ThreadPoolExecutor],
    left: int,
) -> None:
    # The stdlib cancels the pending futures in the failed worker itself, so their
    # done-callbacks run there, after our worker closed its connections.
    conn_settings(max_age=60)
    baseline = probe.steady()
    go = threading.Event()
    ran_in: list[str] = []

    def initializer() -> None:
        go.wait(10)
        raise RuntimeError("initializer failed")

    def callback(future: concurrent.futures.Future[int]) -> None:
        ran_in.append(threading.current_thread().name)
        query()

    pool = cls(1, thread_name_prefix="failing", initializer=initializer)
    pool.submit(query).add_done_callback(callback)
    go.set()
    pool.shutdown(wait=True)

    assert ran_in == ["failing_0"]
    assert settle(probe, baseline + left, timeout=1.0) - baseline == left
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def test_dropped_wrappers_are_not_kept_alive() -> None:
    # connections.create_connection() per job, closed or not, in a thread that never
    # runs a unit: nothing of ours may keep the wrapper objects alive.
    refs = []
    for _ in range(200):
        conn = connections.create_connection("default")
        conn.ensure_connection()
        refs.append(weakref.ref(conn))
        conn.close()
        del conn
    gc.collect()
    assert sum(ref() is not None for ref in refs) == 0


def test_wrappers_a_task_dropped_open_are_freed_by_the_collector(
    conn_settings: Any, probe: ServerProbe
) -> None:
    # As with the stdlib: a wrapper dropped open is freed by gc.collect(), and its
    # socket closed, while the worker lives on.
    conn_settings(max_age=None)
    baseline = probe.steady()

    def open_and_drop() -> None:
        connections.create_connection("default").ensure_connection()

    with ThreadPoolExecutor(1) as pool:
        for _ in range(30):
            pool.submit(open_and_drop).result()
        assert settle(probe, baseline + 30, timeout=1.0) == baseline + 30
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        assert settle(probe, baseline) == baseline


# The interpreter's exit, in a process of its own: threading's exit hooks (where the
# stdlib pools join their workers) run first, then atexit's, which reports.
AT_EXIT = """
import atexit, concurrent.futures, sys
import django
from django.conf import settings
db = {**__import__("json").loads(sys.argv[1]), "CONN_MAX_AGE": None}
settings.configure(USE_TZ=True, DATABASES={"default": db}, INSTALLED_APPS=[])
django.setup()
from django.db import connection, connections
import django_thread
pools = {"ours": django_thread.ThreadPoolExecutor, "stdlib": concurrent.futures.ThreadPoolExecutor}
workers = []
def work():
    connection.ensure_connection()
    workers.append(connections["default"])  # the wrapper, not the proxy
connection.ensure_connection()
main = connections["default"]
pool = pools[sys.argv[2]](1)
pool.submit(work).result()
atexit.register(lambda: print(
    "worker closed", workers[0].connection is None,
    "main open", main.connection is not None, flush=True,
))
"""


@pytest.mark.parametrize(("executor", "closed"), [("ours", True), ("stdlib", False)])
def test_interpreter_exit_closes_the_workers_connections_not_the_main_threads(
    executor: str, closed: bool
) -> None:
    # No shutdown(): the pool is left running, as a script that just ends leaves it.
    import json  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    db = {
        key: value
        for key, value in connections["default"].settings_dict.items()
        if key in ("ENGINE", "NAME", "HOST", "PORT", "USER", "PASSWORD", "OPTIONS")
    }
    done = subprocess.run(
        [sys.executable, "-c", AT_EXIT, json.dumps(db), executor],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr
    assert f"worker closed {closed} main open True" in done.stdout, done.stdout + done.stderr
