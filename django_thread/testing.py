"""Threaded code inside Django's ``TestCase``: :func:`share_connections`.

``TestCase`` (and pytest-django's ``db`` fixture) wraps each test in a transaction on
the test thread's connection, rolled back at the end. Work in other threads runs on
connections of its own: it cannot see the test's rows, waits on the test's locks while
the test waits for it, or gets ``database table is locked`` from the in-memory SQLite
test database. While :func:`share_connections` is active, every unit of work that
runs in another thread uses the test thread's connection instead, one unit at a time,
the way Django's ``LiveServerTestCase`` shares an in-memory SQLite connection.

What stays different from production, on purpose: one connection for everything, and
units that run one after another. It tests what threaded code does to the database,
not how it behaves under concurrency; use ``TransactionTestCase`` (or the load tests
of your staging environment) for that.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from asgiref.sync import sync_to_async as asgiref_sync_to_async
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.test.utils import TestContextDecorator

from django_thread import _connections

__all__ = ["SharedConnectionError", "share_connections"]

_C = TypeVar("_C", bound=Callable[..., Any])


class SharedConnectionError(RuntimeError):
    """A unit of work and the test's shared connection could not be brought together.

    Raised when ``share_connections()`` ends while a unit still runs (and by that
    unit's further queries), and when a unit waits too long for its turn.
    """


class share_connections(TestContextDecorator):  # noqa: N801 - reads like override_settings
    """Run units of work in other threads on the test thread's connections.

    Use it as a context manager, as a decorator of a test function or method, or as a
    class decorator of a ``TestCase`` subclass, like ``override_settings``::

        @share_connections()
        class ReportTests(TestCase):
            def test_pool_sees_the_test_rows(self): ...

        def test_with_pytest(db):
            with share_connections():
                ...

    In an ``async def`` test, decorate it (or its class), or use ``async with
    share_connections():``: the connections shared are those of the thread that runs
    the test's transaction, not the event loop's.

    While it is active, each unit of work in another thread (a task of our
    :class:`~django_thread.ThreadPoolExecutor`, the ``run()`` of our
    :class:`~django_thread.Thread`, an outer :func:`~django_thread.unit_of_work`) uses
    the test thread's connection for every database alias: it sees the test's
    uncommitted rows, its writes are rolled back with the test, and its ``atomic()``
    blocks become savepoints inside the test's transaction. Units take turns; the test
    thread's own statements never run in the middle of a unit's statement. Pools
    created before it started are covered: sharing is decided per unit.

    :param timeout: how long a unit waits for its turn, and how long the end of the
        block waits for a unit still running, before failing with a clear error
        (a unit that waits for another unit can never get its turn).
    """

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._active: _Sharing | None = None
        super().__init__()

    def enable(self) -> None:
        if _connections.sharing:
            msg = "share_connections() is already active; it does not nest"
            raise RuntimeError(msg)
        self._active = _Sharing(self.timeout)
        _connections.sharing.append(self._active)

    def disable(self) -> None:
        active, self._active = self._active, None
        if active is not None:
            _connections.sharing.remove(active)
            active.close()

    # Django runs an async test method in an event loop thread of asgiref's, while the
    # test's transaction is on the thread that waits for it: thread-sensitive calls run
    # there, so enable() and disable() are sent there.
    async def __aenter__(self) -> None:
        await asgiref_sync_to_async(self.enable)()

    async def __aexit__(self, *exc_info: object) -> None:
        await asgiref_sync_to_async(self.disable)()

    def decorate_callable(self, func: _C) -> _C:
        if not inspect.iscoroutinefunction(func):
            return super().decorate_callable(func)

        @functools.wraps(func)
        async def inner(*args: Any, **kwargs: Any) -> Any:
            async with self:
                return await func(*args, **kwargs)

        return cast("_C", inner)


class _SharedUnit:
    """One unit of work running on the shared connections, in one thread."""

    def __init__(self, sharing: _Sharing, saved: dict[str, BaseDatabaseWrapper | None]) -> None:
        self.sharing = sharing
        self.saved = saved

    def end(self) -> None:
        for alias, own in self.saved.items():
            if own is None:
                del connections[alias]
            else:
                connections[alias] = own
        sharing = self.sharing
        sharing.running = None
        sharing.turn.release()
        if sharing.ended.is_set():  # the block ended without us: it left its guard for us to take
            sharing.detach()


class _Sharing:
    """The test thread's connections, lent to one unit at a time."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.owner = threading.get_ident()
        self.connections = {alias: connections[alias] for alias in connections}
        self.turn = threading.Lock()  # held by the unit that uses the connections
        self.statement = threading.RLock()  # held while any thread's statement runs
        self.running: str | None = None  # the unit holding the turn, for errors
        self.ended = threading.Event()  # an Event: read by other threads
        self.detached = False
        for conn in self.connections.values():
            conn.inc_thread_sharing()
            conn.execute_wrappers.append(self._execute)
            # Calls on the driver's connection outside a statement: instance attributes
            # over the backend's methods, removed by detach().
            for name in _GUARDED:
                setattr(conn, name, self._guard(getattr(conn, name)))
            conn.create_cursor = self._guard_cursors(conn.create_cursor)  # type: ignore[method-assign]

    def begin(self, describe: Callable[[], str]) -> _SharedUnit | None:
        if self.ended.is_set() or threading.get_ident() == self.owner:
            return None  # the test thread uses its connections as it always does
        if not self.turn.acquire(timeout=self.timeout):
            msg = (
                f"{describe()} waited {self.timeout:g} s for the test's shared connection, "
                f"in use by {self.running}. Under share_connections() units of work run "
                "one at a time, so a unit that waits for another one never gets its turn."
            )
            raise SharedConnectionError(msg)
        if self.ended.is_set():  # it ended while we waited
            self.turn.release()
            return None
        self.running = describe()
        saved = {alias: _initialized(alias) for alias in self.connections}
        for alias, conn in self.connections.items():
            connections[alias] = conn
        return _SharedUnit(self, saved)

    def _execute(
        self,
        execute: Callable[..., Any],
        sql: str,
        params: Any,
        many: bool,
        context: dict[str, Any],
    ) -> Any:
        if self.ended.is_set() and threading.get_ident() != self.owner:
            msg = (
                f"share_connections() has ended, and the test's connection is being rolled "
                f"back: {self.running} can no longer use it. Wait for threaded work "
                "(future.result(), join(), shutdown()) before the test ends."
            )
            raise SharedConnectionError(msg)
        with self.statement:
            return execute(sql, params, many, context)

    def _guard(self, call: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(call)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            # Not only execute(): mysqlclient refuses (rather than waits for) a call on
            # a connection another thread is inside, commits and cursor closes included.
            with self.statement:
                return call(*args, **kwargs)

        return guarded

    def _guard_cursors(self, create: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(create)
        def create_cursor(*args: Any, **kwargs: Any) -> Any:
            return _GuardedCursor(create(*args, **kwargs), self.statement)

        return create_cursor

    def detach(self) -> None:
        """Give the test thread its connections back, from whichever side ends last."""
        with self.statement:
            if self.detached:
                return
            self.detached = True
        for conn in self.connections.values():
            conn.execute_wrappers.remove(self._execute)
            for name in (*_GUARDED, "create_cursor"):
                vars(conn).pop(name, None)
            conn.dec_thread_sharing()

    def close(self) -> None:
        """End the sharing; fail loudly if a unit still runs on the connections."""
        running = None
        if self.turn.acquire(timeout=self.timeout):
            self.ended.set()
            self.turn.release()
            self.detach()
        else:
            running = self.running
            with self.statement:  # no statement of that unit is half-way through
                self.ended.set()
            # The guard stays on the connections until the unit ends (_SharedUnit.end),
            # so that its further statements fail instead of running during the rollback.
        if running is not None:
            msg = (
                f"share_connections() ended while {running} was still running on the "
                "test's connection; its further queries fail. Wait for threaded work "
                "(future.result(), join(), shutdown()) before the block or test ends."
            )
            raise SharedConnectionError(msg)


# The wrapper's methods that call the driver's connection outside a statement.
_GUARDED = ("_commit", "_rollback", "_set_autocommit")


class _GuardedCursor:
    """A driver cursor whose close() waits for the statement in progress on the
    connection, if another thread's: closing discards pending results on the connection."""

    def __init__(self, cursor: Any, statement: threading.RLock) -> None:
        self.cursor = cursor
        self.statement = statement

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cursor, name)

    def __iter__(self) -> Any:
        return iter(self.cursor)

    def close(self) -> None:
        with self.statement:
            self.cursor.close()


def _initialized(alias: str) -> BaseDatabaseWrapper | None:
    """This thread's own wrapper for *alias*, without creating one."""
    for conn in connections.all(initialized_only=True):
        if conn.alias == alias:
            return conn
    return None
