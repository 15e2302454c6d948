"""Canaries: one per private detail listed in django_thread/_compat.py.

Each fails, naming the detail, on the first Python, Django or asgiref that changes it.
(The worker loop's reads of the queue have their own canary in test_parity.py, and
the registry's listing in test_thread.py.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import subprocess
import sys
import threading
import weakref
from typing import Any

import django
import pytest
from django.db import connection, connections

from django_thread import _compat
from tests.work import query

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_stdlib_pool_keeps_its_work_queue_where_we_swap_it() -> None:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=3)
    try:
        assert isinstance(getattr(pool, _compat.WORK_QUEUE, None), queue.SimpleQueue), (
            f"ThreadPoolExecutor.{_compat.WORK_QUEUE} is gone or no longer a SimpleQueue: "
            "django_thread.ThreadPoolExecutor swaps it to see unit boundaries"
        )
        assert _compat.max_workers(pool) == 3, "ThreadPoolExecutor._max_workers changed"
    finally:
        pool.shutdown()


def test_a_work_item_names_its_function_and_can_be_made_to_raise() -> None:
    seen: list[Any] = []
    gate = threading.Event()

    class Queue(queue.SimpleQueue[Any]):
        def get(self, block: bool = True, timeout: float | None = None) -> Any:
            item = super().get(block, timeout)
            if item is not None and not seen:
                seen.append(_compat.work_item_function(item))
                _compat.make_work_item_raise(item, LookupError("made to raise"))
            return item

        def get_nowait(self) -> Any:
            raise queue.Empty

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    setattr(pool, _compat.WORK_QUEUE, Queue())
    try:
        future = pool.submit(gate.set)
        with pytest.raises(LookupError, match="made to raise"):
            future.result(timeout=5)
    finally:
        pool.shutdown()
    assert seen == [gate.set], "work items no longer carry .fn (3.11-3.13) or .task (3.14+)"
    assert not gate.is_set()


def test_threadings_exit_hooks_run_before_the_pools_join_their_workers() -> None:
    # A hook registered after the pool module must run while a task still runs: the
    # stdlib's pool joins its workers from its own hook, registered at its import.
    code = """
import concurrent.futures, threading, time
from django_thread import _compat
pool = concurrent.futures.ThreadPoolExecutor(1)
pool.submit(time.sleep, 0.5)
_compat.register_before_pools_join(lambda: print("hook ran, task running:", bool(pool._threads)))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert "hook ran, task running: True" in out.stdout, (
        "threading._register_atexit no longer runs before the pools' exit hook: " + out.stderr
    )


def test_a_pools_workers_can_be_daemons_that_exit_lets_go_of() -> None:
    # The tasks backend bounds exit by SHUTDOWN_TIMEOUT: a worker still running then
    # must be a daemon thread that the stdlib's exit hook does not join.
    code = """
import concurrent.futures, time
from django_thread import _compat
class Pool(concurrent.futures.ThreadPoolExecutor):
    def _adjust_thread_count(self):
        _compat.start_workers_as_daemons(self, super()._adjust_thread_count)
pool = Pool(4)
for _ in range(5):
    pool.submit(time.sleep, 0).result()
print("idle worker reused:", len(pool._threads) == 1)
pool.submit(time.sleep, 60)
print("daemons:", all(t.daemon for t in pool._threads))
_compat.register_before_pools_join(lambda: [_compat.forget_worker(t) for t in pool._threads])
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert "idle worker reused: True" in out.stdout, out.stderr
    assert "daemons: True" in out.stdout, (
        "the stdlib's workers no longer inherit daemon from the thread that starts them"
    )


def test_djangos_registry_is_a_threading_local() -> None:
    assert _compat.registry() is not None, (
        "connections._connections._storage is no longer a threading.local: "
        "registered_wrappers() falls back to connections.all(), slower per unit"
    )


def test_a_wrapper_knows_its_owner_thread() -> None:
    query()
    assert _compat.owner_ident(connection) == threading.get_ident(), (
        "BaseDatabaseWrapper._thread_ident is gone: connections lent to this thread "
        "(share_connections(), LiveServerThread) would be closed as if its own"
    )


def test_djangos_health_check_flag_is_where_we_set_it(conn_settings: Any) -> None:
    conn_settings(max_age=None, health_checks=True)
    query()
    conn = connections["default"]
    assert isinstance(getattr(conn, _compat.HEALTH_CHECK_DONE, None), bool), (
        "BaseDatabaseWrapper.health_check_done is gone: the health-check window has no effect"
    )
    conn.close_if_unusable_or_obsolete()
    assert getattr(conn, _compat.HEALTH_CHECK_DONE) is False


def test_forgetting_atomic_blocks_lets_close_really_close() -> None:
    # A wrapper of its own, marked as inside atomic() by hand: the test's connection
    # is never left in a broken block.
    conn = connections.create_connection("default")
    try:
        conn.ensure_connection()
        for name in ("atomic_blocks", "savepoint_ids", "needs_rollback", "closed_in_transaction"):
            assert hasattr(conn, name), f"BaseDatabaseWrapper.{name} is gone"
        conn.in_atomic_block = True
        _compat.forget_atomic_blocks(conn)
        conn.close()
        assert conn.connection is None, "close() inside a forgotten atomic() left it open"
        assert not conn.in_atomic_block
    finally:
        conn.in_atomic_block = False
        conn.close()


def test_djangos_close_lets_go_in_underscore_close_only() -> None:
    conn = connections.create_connection("default")
    conn.ensure_connection()
    raw = conn.connection
    calls: list[object] = []
    conn._close = lambda: calls.append(conn.connection)  # type: ignore[attr-defined]
    try:
        conn.close()
        assert calls == [raw], "close() no longer closes through _close(): nothing is kept"
        assert conn.connection is None, "close() no longer forgets the raw connection"
    finally:
        raw.close()


def test_djangos_connect_keeps_the_close_at_get_new_connection_sets(conn_settings: Any) -> None:
    conn_settings(max_age=60)
    conn = connections.create_connection("default")
    connect = conn.get_new_connection

    def get_new_connection(params: Any) -> Any:
        assert conn.close_at is not None, "connect() sets close_at after get_new_connection()"
        conn.close_at = 123.0
        return connect(params)

    conn.get_new_connection = get_new_connection  # type: ignore[method-assign,assignment]
    try:
        conn.ensure_connection()
        assert conn.close_at == 123.0, (
            "connect() resets close_at after get_new_connection(): a kept connection's "
            "CONN_MAX_AGE would count from its hand-over"
        )
    finally:
        conn.close()


@pytest.mark.skipif(django.VERSION < (6, 0), reason="django.tasks is Django 6.0+")
def test_a_task_result_stores_its_return_value_where_we_put_it() -> None:
    from django.tasks.base import TaskResult, TaskResultStatus  # noqa: PLC0415

    result = object.__new__(TaskResult)
    object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
    _compat.set_return_value(result, [1])
    assert result.return_value == [1], "TaskResult._return_value is no longer read"


def test_our_pool_drops_its_work_items_as_the_stdlib_does() -> None:
    # The stdlib's worker deletes each work item after running it (GH-60488); ours
    # lets go of its copy as the unit ends (tests/test_references.py says why).
    from django_thread import ThreadPoolExecutor  # noqa: PLC0415

    class Arg:
        pass

    freed = threading.Event()
    arg = Arg()
    _ref = weakref.ref(arg, lambda _: freed.set())
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(id, arg).result()
        del arg
        assert freed.wait(5)


def test_asgirefs_sync_to_async_reads_its_executor_where_we_hand_out_ours() -> None:
    import asyncio  # noqa: PLC0415

    from asgiref.sync import SyncToAsync  # noqa: PLC0415

    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="canary")
    bridge = SyncToAsync(lambda: threading.current_thread().name, thread_sensitive=False)
    setattr(bridge, _compat.ASGIREF_EXECUTOR, pool)  # after __init__, as our property does
    try:
        name = asyncio.run(bridge())
    finally:
        pool.shutdown()
    assert name.startswith("canary"), "asgiref's SyncToAsync no longer reads _executor"
    assert _compat.is_shut_down(pool), "the stdlib pool no longer records shutdown()"


@pytest.mark.skipif(connection.vendor != "mysql", reason="mysqlclient's, on MariaDB/MySQL")
def test_mysqlclient_lends_its_native_connection_for_a_session_reset() -> None:
    connection.ensure_connection()
    raw = connection.connection
    with raw.cursor() as cursor:
        cursor.execute("SET @django_thread_canary = 1")
    _compat.reset_mysql_session(raw)  # AttributeError: no _get_native_connection()
    with raw.cursor() as cursor:
        cursor.execute("SELECT @django_thread_canary")
        assert cursor.fetchone() == (None,), "mysql_reset_connection() reset nothing"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="psycopg's, on PostgreSQL")
def test_psycopg_forgets_its_prepared_statements_where_we_tell_it_to() -> None:
    import psycopg  # noqa: PLC0415

    params = {**connection.get_connection_params(), "prepare_threshold": 0, "autocommit": True}
    # Django's default ClientCursor prepares nothing: server-side binding's cursor does.
    with psycopg.connect(**{**params, "cursor_factory": psycopg.Cursor}) as raw:
        raw.execute("DISCARD ALL", prepare=False)  # seen with nothing prepared...
        raw.execute("SELECT 1")  # prepared at once, with a threshold of 0
        raw.execute("DISCARD ALL", prepare=False)  # ...so not looked at again
        _compat.forget_prepared_statements(raw)  # AttributeError: no _prepared.clear()
        raw.execute("SELECT 1")  # prepared again, or it fails: it no longer exists


def test_asgiref_runs_a_contexts_sync_code_in_a_thread_of_its_own() -> None:
    from asgiref.sync import ThreadSensitiveContext, async_to_sync, sync_to_async  # noqa: PLC0415

    where = sync_to_async(_compat.in_its_contexts_own_thread)

    async def in_a_context() -> bool:
        async with ThreadSensitiveContext():  # as Django's ASGI handler, per request
            # The stdlib lists a worker just after starting it, so the first call may
            # run before; in a request, request_started's receivers are that call.
            await sync_to_async(threading.get_ident)()
            return await where()

    message = (
        "asgiref's SyncToAsync.thread_sensitive_context / context_to_thread_executor "
        "changed: under ASGI a request's connections go back to the keep only as its "
        "thread ends"
    )
    assert asyncio.run(in_a_context()) is True, message
    assert asyncio.run(where()) is False  # asgiref's one shared thread comes back
    # Under async_to_sync (Django's AsyncClient in a test) the code runs in this thread.
    assert async_to_sync(in_a_context)() is False
    assert _compat.in_its_contexts_own_thread() is False
