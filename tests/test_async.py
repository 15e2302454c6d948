"""django_thread.sync_to_async: each call a unit of work, against real servers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import pytest
from asgiref.sync import async_to_sync
from asgiref.sync import sync_to_async as asgiref_sync_to_async
from django.db import connection, transaction
from django.test import TestCase

from django_thread import database_sync_to_async, default_executor, sync_to_async
from django_thread.testing import share_connections
from tests.conftest import ConnSettings
from tests.faults import IdleTimeout
from tests.server import ServerProbe
from tests.testapp.models import Note
from tests.work import query

pytestmark = pytest.mark.django_db(transaction=True)


def _failures(calls: int, pause: float, bridge: object) -> int:
    async def run() -> int:
        failed = 0
        for _ in range(calls):
            try:
                await bridge(query)()  # type: ignore[operator]
            except Exception:
                failed += 1
            await asyncio.sleep(pause)
        return failed

    return asyncio.run(run())


@pytest.mark.slow
def test_stale_connections_fail_plain_asgiref_and_never_ours(
    server: ServerProbe, conn_settings: ConnSettings
) -> None:
    if server.vendor == "postgresql":
        timeout = IdleTimeout({"options": "-c idle_session_timeout=1000"}, 1.0)
    else:
        timeout = IdleTimeout({"init_command": "SET SESSION wait_timeout=1"}, 1.0)
    conn_settings(max_age=None, health_checks=True, **timeout.options)
    baseline = server.steady()
    plain_pool = concurrent.futures.ThreadPoolExecutor(1)
    ours_pool = concurrent.futures.ThreadPoolExecutor(1)

    def plain(f: object) -> object:
        return asgiref_sync_to_async(f, thread_sensitive=False, executor=plain_pool)  # type: ignore[call-overload]

    def ours(f: object) -> object:
        return sync_to_async(f, thread_sensitive=False, executor=ours_pool)  # type: ignore[call-overload]

    try:
        assert _failures(3, timeout.pause, plain) >= 1  # the fault is real
        assert _failures(3, timeout.pause, ours) == 0
        assert _failures(3, timeout.pause, database_sync_to_async) == 0
    finally:
        plain_pool.shutdown()
        ours_pool.shutdown()
    # a stdlib pool never closes its threads' connections; the server drops them idle
    assert server.drained(timeout.pause * 2) <= baseline


def test_a_transaction_the_caller_opened_survives_a_call() -> None:
    async def insert_and_count() -> int:
        await sync_to_async(Note.objects.create)(text="inside")
        return await sync_to_async(Note.objects.count)()

    with transaction.atomic():
        assert async_to_sync(insert_and_count)() == 1
        assert connection.in_atomic_block
        assert Note.objects.count() == 1
        transaction.set_rollback(True)
    assert Note.objects.count() == 0


def test_cancelled_awaits_still_end_their_units(probe: ServerProbe) -> None:
    baseline = probe.steady()
    pool = concurrent.futures.ThreadPoolExecutor(2)
    threads_in_transaction: list[bool] = []

    def leave_transaction_open() -> None:
        transaction.set_autocommit(False)
        Note.objects.create(text="never committed")
        time.sleep(0.01)

    def check() -> None:
        threads_in_transaction.append(not connection.get_autocommit())

    async def run() -> None:
        call = sync_to_async(leave_transaction_open, thread_sensitive=False, executor=pool)
        for _ in range(50):
            tasks = [asyncio.create_task(call()) for _ in range(2)]
            await asyncio.sleep(0.002)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for _ in range(4):
            await sync_to_async(check, thread_sensitive=False, executor=pool)()

    asyncio.run(run())
    pool.shutdown(wait=True)
    assert threads_in_transaction == [False] * 4
    assert Note.objects.count() == 0
    connection.close()
    assert probe.drained(5.0) <= baseline


def test_thread_sensitive_false_uses_our_pool_and_asyncio_default_executor() -> None:
    names: list[str] = []

    def where() -> int:
        names.append(threading.current_thread().name)
        return query()

    async def run() -> None:
        await sync_to_async(where, thread_sensitive=False)()
        asyncio.get_running_loop().set_default_executor(default_executor())
        await asyncio.to_thread(where)

    asyncio.run(run())
    asyncio.run(run())  # the first run shut its default executor, our pool, down
    assert all(n.startswith("django_thread.sync_to_async") for n in names), names
    assert len(names) == 4


def test_a_coroutine_function_gets_asgirefs_type_error() -> None:
    async def coro() -> None:
        pass

    with pytest.raises(TypeError, match="sync functions"):
        sync_to_async(coro)


@pytest.mark.django_db(transaction=False)
def test_share_connections_lets_awaited_calls_see_the_test_rows() -> None:

    Note.objects.create(text="the test's own, uncommitted")

    async def count() -> int:
        return await sync_to_async(Note.objects.count, thread_sensitive=False)()

    with share_connections():
        assert asyncio.run(count()) == 1


class AsyncTestCaseMethods(TestCase):
    """Django's TestCase runs ``async def`` tests: awaited calls then run in other threads."""

    @classmethod
    def setUpTestData(cls) -> None:
        Note.objects.create(text="from setUpTestData")

    async def test_without_sharing_another_thread_sees_none_of_the_rows(self) -> None:
        count = await sync_to_async(Note.objects.count, thread_sensitive=False)()
        assert count == 0  # its own connection: the test's rows are uncommitted

    @share_connections()
    async def test_shared_awaited_calls_see_the_test_rows(self) -> None:
        await sync_to_async(Note.objects.create, thread_sensitive=False)(text="awaited")
        count = await sync_to_async(Note.objects.count, thread_sensitive=False)()
        assert count == 2
        assert await Note.objects.acount() == 2

    async def test_async_with_shares_the_test_threads_connections(self) -> None:
        async with share_connections():
            count = await sync_to_async(Note.objects.count, thread_sensitive=False)()
        assert count == 1
