"""django_thread.backends: a thread's clean connection is kept for the next thread.

Each scenario runs with Django's own ENGINE first, where it must fail (every thread
opens a session), then with ours; sessions are counted on the server (SQLite has
none: the raw connection objects and this process's file handles stand in).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.core.handlers.asgi import ASGIHandler
from django.core.signals import request_finished
from django.db import connection, connections, transaction
from django.db.utils import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.test.utils import modify_settings, override_settings
from django.urls import path

from django_thread import Thread, ThreadPoolExecutor, unit_of_work
from django_thread._keep import DEFAULT_KEEP
from django_thread.backends import close_idle, idle_count
from django_thread.testing import share_connections
from tests.conftest import VENDOR, ConnSettings, settle
from tests.server import ServerProbe
from tests.testapp.models import Note
from tests.work import main_backend_ids, session_id

pytestmark = pytest.mark.django_db(transaction=True)

PLAIN = f"django.db.backends.{VENDOR}"
KEEP = f"django_thread.backends.{VENDOR}"
HERE = Path(__file__).resolve().parent


@pytest.fixture
def engine(conn_settings: ConnSettings) -> Iterator[Callable[[str], None]]:
    """Switch the default alias's ENGINE for the threads started next.

    Each thread makes its wrappers from the settings dict on first use, so new threads
    get the new ENGINE; the main thread's wrapper is made anew too.
    """
    db = connections.settings["default"]

    def use(name: str) -> None:
        connections["default"].close()
        del connections["default"]
        close_idle()
        db["ENGINE"] = name

    yield use
    connections["default"].close()
    del connections["default"]
    close_idle()  # conn_settings restores ENGINE


def session() -> object:
    """This thread's server session on the default alias, uniquely named."""
    with connection.cursor() as cursor:
        if VENDOR == "postgresql":
            cursor.execute(
                "SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
            )
            return tuple(cursor.fetchone())
        if VENDOR == "mysql":
            cursor.execute("SELECT CONNECTION_ID()")
            return cursor.fetchone()[0]
        cursor.execute("SELECT 1")
    return connection.connection  # SQLite: the raw connection object itself


def server_id(key: object) -> int:
    value = key[0] if isinstance(key, tuple) else key
    assert isinstance(value, int)
    return value


T = TypeVar("T")


def in_thread(work: Callable[[], T], how: str = "thread") -> T:
    """Run *work* in a new thread that ends before this returns; its result."""
    out: list[T] = []

    def run() -> None:
        if how == "unit":
            with unit_of_work():
                out.append(work())
        else:
            out.append(work())

    if how == "thread":
        thread: threading.Thread = Thread(target=run)
    else:  # "app": the app's thread-exit close; "unit": unit_of_work's; "bare": none
        thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert out, "the work raised in its thread"
    return out[0]


def sessions_of(threads: int, how: str = "thread") -> list[object]:
    """The session each of *threads* short-lived threads, one after another, used."""
    return [in_thread(session, how) for _ in range(threads)]


def distinct(keys: list[object]) -> int:
    return len({id(k) if VENDOR == "sqlite3" else k for k in keys})


@pytest.mark.parametrize("how", ["thread", "app", "unit", "bare"])
def test_sequential_threads_share_one_session(
    how: str, engine: Callable[[str], None], conn_settings: ConnSettings, probe: ServerProbe
) -> None:
    conn_settings(max_age=None, health_checks=True)
    app: AbstractContextManager[object] = nullcontext()
    if how == "app":  # the app's own thread-exit close, in a plain thread
        app = modify_settings(INSTALLED_APPS={"append": "django_thread"})
    with app:
        engine(PLAIN)
        plain = sessions_of(8, how)
        assert distinct(plain) == 8  # Django's ENGINE: every thread connects
        if how == "bare":  # and nothing closes a plain thread's connections
            del plain
            gc.collect()
        assert settle(probe, 0) == 0

        engine(KEEP)
        kept = sessions_of(8, how)
        assert distinct(kept) == 1
        assert idle_count("default") == 1
        assert settle(probe, 1) == 1  # the kept one, idle
    close_idle()
    assert settle(probe, 0) == 0


def test_a_pool_reuses_what_an_earlier_pool_gave_back(
    engine: Callable[[str], None], conn_settings: ConnSettings, probe: ServerProbe
) -> None:
    conn_settings(max_age=None, health_checks=True)
    engine(KEEP)
    seen: list[object] = []
    for _ in range(3):
        barrier = threading.Barrier(2)  # both workers connected at once
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(_then_wait, barrier) for _ in range(2)]
            seen += [f.result() for f in futures]
    assert distinct(seen) == 2
    assert settle(probe, 2) == 2


@pytest.fixture
def utc_database(probe: ServerProbe) -> Iterator[None]:
    """On PostgreSQL, sessions start in UTC: Django's connect then sends no SET."""
    if VENDOR != "postgresql":
        yield
        return
    conn: Any = probe.conn  # type: ignore[attr-defined]
    conn.execute(f"ALTER DATABASE \"{probe.database}\" SET timezone TO 'UTC'")
    try:
        yield
    finally:
        conn.execute(f'ALTER DATABASE "{probe.database}" RESET timezone')


def test_prepared_statements_survive_hand_overs(
    engine: Callable[[str], None], conn_settings: ConnSettings, utc_database: None
) -> None:
    # With server-side binding and a prepare_threshold (both off by default) psycopg
    # prepares a statement run 5 times, DISCARD ALL included, which deallocates itself.
    pg = {"server_side_binding": True, "prepare_threshold": 5}
    conn_settings(max_age=None, **(pg if VENDOR == "postgresql" else {}))
    engine(KEEP)

    def repeat() -> object:
        for _ in range(6):
            Note.objects.filter(text="x").count()
        return session()

    assert distinct([in_thread(repeat) for _ in range(8)]) == 1

    def connect_only() -> object:
        connection.ensure_connection()
        return session_id() if VENDOR != "sqlite3" else connection.connection

    # Hand-overs with nothing run in between: only the resets, one after another.
    assert distinct([in_thread(connect_only) for _ in range(8)]) == 1
    # ...then statements prepared again: psycopg, which saw DISCARD ALL once with nothing
    # prepared, must still forget them at the next one.
    assert distinct([in_thread(repeat) for _ in range(3)]) == 1


def _then_wait(barrier: threading.Barrier) -> object:
    key = session()
    barrier.wait(5)
    return key


def _leave_atomic_open() -> object:
    key = session()
    transaction.atomic().__enter__()
    return key


def _leave_autocommit_off() -> object:
    key = session()
    transaction.set_autocommit(False)
    return key


def _fail_a_query() -> object:
    key = session()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table")
    except DatabaseError:
        pass
    return key


def _raw_begin() -> object:
    key = session()
    with connection.cursor() as cursor:
        cursor.execute("START TRANSACTION" if VENDOR == "mysql" else "BEGIN")
        cursor.execute("SELECT 1")
    return key


@pytest.mark.parametrize(
    "dirty", [_leave_atomic_open, _leave_autocommit_off, _fail_a_query, _raw_begin]
)
def test_a_dirty_connection_is_never_handed_over(
    dirty: Callable[[], object],
    engine: Callable[[str], None],
    conn_settings: ConnSettings,
    probe: ServerProbe,
) -> None:
    conn_settings(max_age=None)
    engine(KEEP)
    first = in_thread(dirty)
    second, inherited = in_thread(lambda: (session(), in_server_transaction()))
    assert not inherited
    if dirty is _raw_begin and VENDOR == "mysql":
        # mysqlclient cannot tell: kept after a ROLLBACK, which is what a close does.
        assert distinct([first, second]) == 1
    else:
        assert distinct([first, second]) == 2
    assert settle(probe, 1) == 1  # only the second thread's, kept


def in_server_transaction() -> bool:
    """Whether the server has a transaction open on this thread's session."""
    raw = connection.connection
    if VENDOR == "postgresql":
        return bool(raw.info.transaction_status != 0)  # 0: IDLE
    if VENDOR == "mysql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT @@in_transaction")
            return bool(cursor.fetchone()[0])
    return bool(raw.in_transaction)


def test_max_age_zero_never_keeps(
    engine: Callable[[str], None], conn_settings: ConnSettings, probe: ServerProbe
) -> None:
    conn_settings(max_age=0)
    engine(KEEP)
    assert distinct(sessions_of(4)) == 4
    assert idle_count("default") == 0
    assert settle(probe, 0) == 0


def test_max_age_counts_from_the_real_connect(
    engine: Callable[[str], None], conn_settings: ConnSettings, probe: ServerProbe
) -> None:
    conn_settings(max_age=2)
    engine(KEEP)
    first = in_thread(session)
    time.sleep(1.2)

    def left() -> tuple[object, float]:
        key = session()
        assert connection.close_at is not None
        return key, connection.close_at - time.monotonic()

    second, remaining = in_thread(left)
    assert distinct([first, second]) == 1  # handed over
    assert remaining < 1.0  # not a fresh 2 s: the age came with it
    time.sleep(1.0)
    third = in_thread(session)
    assert distinct([first, third]) == 2  # expired while kept: closed, not handed over
    assert settle(probe, 1) == 1


def test_an_older_idle_one_past_max_age_is_closed_as_a_newer_one_is_taken(
    engine: Callable[[str], None], conn_settings: ConnSettings, probe: ServerProbe
) -> None:
    # Newest first: below a younger one, an old connection could stay idle, open, long
    # past CONN_MAX_AGE. It is closed as the next thread connects.
    conn_settings(max_age=2)
    engine(KEEP)
    old = in_thread(session)
    time.sleep(1.2)
    keys: dict[str, object] = {}
    holding = {name: threading.Event() for name in "ab"}
    release = {name: threading.Event() for name in "ab"}

    def hold(name: str) -> None:
        keys[name] = session()
        holding[name].set()
        assert release[name].wait(10)

    threads = {name: Thread(target=hold, args=(name,)) for name in "ab"}
    for name in "ab":  # a takes the old one; b, while a holds it, opens a new one
        threads[name].start()
        assert holding[name].wait(10)
    for name in "ab":  # given back oldest first: the new one ends up on top
        release[name].set()
        threads[name].join()
    assert keys["a"] == old
    assert distinct([old, keys["b"]]) == 2
    assert idle_count("default") == 2
    time.sleep(1.0)  # the old one is past CONN_MAX_AGE now, the new one is not
    assert in_thread(session) == keys["b"]
    assert idle_count("default") == 1  # the old one was closed, not left idle
    assert settle(probe, 1) == 1


@pytest.mark.parametrize(
    ("health_checks", "window"),
    [(False, 0), (True, 0), (True, 60)],
    ids=["no-health-checks", "health-checks", "health-checks-window"],
)
def test_a_session_killed_while_kept_is_replaced(
    health_checks: bool,
    window: float,
    engine: Callable[[str], None],
    conn_settings: ConnSettings,
    server: ServerProbe,
) -> None:
    # The reset a kept session gets as it is taken is a round trip, so it is the health
    # check too: a kill is found with or without CONN_HEALTH_CHECKS, and within the window.
    conn_settings(max_age=None, health_checks=health_checks)
    engine(KEEP)
    with override_settings(DJANGO_THREAD={"HEALTH_CHECK_WINDOW": window}):
        first = in_thread(session)
        assert idle_count("default") == 1
        server.kill(server_id(first))
        assert server.drained(5, [server_id(first)]) == 0
        second = in_thread(session)  # no query fails
        assert first != second
        assert idle_count("default") == 1  # the new one; the dead one was closed
    assert server.count() == 1


@pytest.mark.parametrize("bound", [0, 2])
def test_at_most_bound_idle_per_alias(
    bound: int, engine: Callable[[str], None], conn_settings: ConnSettings, probe: ServerProbe
) -> None:
    conn_settings(max_age=None, keep=bound)
    engine(KEEP)
    barrier = threading.Barrier(4)

    def together() -> None:
        session()
        barrier.wait(5)

    threads = [Thread(target=together) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert idle_count("default") == bound
    assert settle(probe, bound) == bound


def test_a_bad_bound_is_an_error_at_connect(
    engine: Callable[[str], None], conn_settings: ConnSettings
) -> None:
    from django.core.exceptions import ImproperlyConfigured  # noqa: PLC0415

    conn_settings(max_age=None, keep=-1)
    engine(KEEP)
    with pytest.raises(ImproperlyConfigured, match="keep"):
        session()


def test_a_shared_test_connection_is_never_kept(
    engine: Callable[[str], None], conn_settings: ConnSettings, probe: ServerProbe
) -> None:
    conn_settings(max_age=None)
    engine(KEEP)
    mine = session()
    with share_connections():
        assert in_thread(session) == mine
    assert idle_count("default") == 0
    assert connection.connection is not None  # still the test's
    assert settle(probe, 1) == 1


def _scenario(name: str, probe: ServerProbe, **db_settings: Any) -> dict[str, Any]:
    """Run tests/keep_scenarios.py *name* in a new process, on the test database."""
    db = {k: v for k, v in connections.settings["default"].items() if k != "TEST"}
    db.update(ENGINE=KEEP, **db_settings)
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    done = subprocess.run(
        [sys.executable, str(HERE / "keep_scenarios.py"), name, json.dumps(db)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_none_held_after_process_exit(server: ServerProbe) -> None:
    result = _scenario("exit", server)
    assert result["idle"] == 1
    assert server.drained(5, [result["session"]]) == 0


def test_a_fork_child_leaves_the_parents_sessions_alone(server: ServerProbe) -> None:
    result = _scenario("fork", server)
    assert result["child"] == 0
    assert result["before"] == result["after"]  # the parent's kept session, still alive


def test_a_test_runner_can_destroy_its_test_database(server: ServerProbe) -> None:
    # PostgreSQL refuses to drop a database that idle kept sessions are connected to.
    name = str(connections.settings["default"]["NAME"]) + "_runner"
    result = _scenario("testdb", server, NAME=name)
    assert result["idle"] == 0


def _serve_and_count(engine: str, requests: int) -> int:
    """Serve tests/keep_asgi.py with uvicorn; how many sessions *requests* used."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    db = {k: v for k, v in connections.settings["default"].items() if k != "TEST"}
    db.update(ENGINE=engine, CONN_MAX_AGE=None, CONN_HEALTH_CHECKS=True)
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "KEEP_ASGI_DB": json.dumps(db)}
    args = ["tests.keep_asgi:application", "--port", str(port), "--log-level", "warning"]
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", *args], env=env)
    try:
        url = f"http://127.0.0.1:{port}/"
        with httpx.Client() as client:
            deadline = time.monotonic() + 120  # Django starts slowly on a loaded machine
            while True:
                try:
                    client.get(url)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "uvicorn did not start"
                    time.sleep(0.1)
            sessions = set()
            for _ in range(requests):
                response = client.get(url)
                assert response.status_code == 200, response.text
                sessions.add(response.text)
        return len(sessions)
    finally:
        server.terminate()
        server.wait(30)


def test_uvicorn_reuses_connections_across_requests(server: ServerProbe) -> None:
    # Django's ticket #33497: a new thread per request, so every request connects.
    assert _serve_and_count(PLAIN, 30) == 30
    # A request's thread gives its connection back at the request's end, which Django
    # reaches just after sending the answer: the client's next request may connect
    # first, so a worker may open a few (2 measured), never one per request.
    assert _serve_and_count(KEEP, 100) <= DEFAULT_KEEP
    assert server.drained(10, set(server.backend_ids()) - main_backend_ids()) == 0


def _asgi_request(path: str) -> int:
    """Serve one GET of *path* with Django's ASGI handler, as a server's event loop
    would (not under async_to_sync, which would run the view in this thread)."""
    scope = {"type": "http", "method": "GET", "path": path, "query_string": b"",
             "headers": [], "server": ("testserver", 80)}  # fmt: skip
    sent: list[Mapping[str, Any]] = []
    received: list[bool] = []

    async def receive() -> dict[str, Any]:
        if received:  # Django listens for a disconnect until the answer is sent
            await asyncio.Event().wait()
        received.append(True)
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Mapping[str, Any]) -> None:
        sent.append(message)

    asyncio.run(ASGIHandler()(scope, receive, send))
    return int(sent[0]["status"])


def _answer_with_a_query(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(session()))


urlpatterns = [path("query/", _answer_with_a_query)]


@pytest.mark.parametrize("engine_name", [PLAIN, KEEP])
def test_an_asgi_requests_connection_is_given_back_as_the_request_ends(
    engine: Callable[[str], None], conn_settings: ConnSettings, engine_name: str
) -> None:
    # Under ASGI the request's thread is joined only after the client had its answer:
    # given back then, the client's next request would already have opened another.
    conn_settings(max_age=None, health_checks=True)
    engine(engine_name)
    kept_at_the_end: list[int] = []

    def after_django_thread(**kwargs: Any) -> None:  # connected after our receiver
        kept_at_the_end.append(idle_count("default"))

    request_finished.connect(after_django_thread)
    try:
        with override_settings(ROOT_URLCONF=__name__):
            assert _asgi_request("/query/") == 200
    finally:
        request_finished.disconnect(after_django_thread)
        gc.collect()  # Django's ENGINE, without the app: the thread's connection is GC's
    assert kept_at_the_end == [1 if engine_name == KEEP else 0]
    assert idle_count("default") == (1 if engine_name == KEEP else 0)


@pytest.mark.usefixtures("no_gc")
def test_a_give_back_that_fails_really_closes(
    engine: Callable[[str], None], conn_settings: ConnSettings, probe: ServerProbe
) -> None:
    conn_settings(max_age=None)
    engine(KEEP)

    def then_break_the_setting() -> object:
        key = session()
        connection.settings_dict["OPTIONS"]["keep"] = -1  # read again at give-back
        return key

    in_thread(then_break_the_setting)
    assert idle_count("default") == 0
    assert settle(probe, 0) == 0
