"""Time limits the database enforces: ``unit_of_work(statement_timeout=...)``, per vendor.

Each function acts on one connection of the calling thread. :func:`apply` sets a
limit and returns what was in force, read in the same round trip; :func:`put_back`
restores it. Which connections, and when, is :mod:`django_thread._connections`'s
business.

- PostgreSQL: ``statement_timeout``, and ``idle_in_transaction_session_timeout`` on a
  connection not already inside a transaction (the caller's, whose session it would end).
- MariaDB: ``max_statement_time``; MySQL: ``max_execution_time`` (SELECTs only).
- SQLite: a progress handler that stops the engine once the running statement is older
  than the limit (a trace callback marks each statement's start). SQLite cannot report
  a handler already installed, so the unit's replaces it and is removed at the end.
"""

from __future__ import annotations

import math
import time
from typing import Any

from django.db import NotSupportedError
from django.db.backends.base.base import BaseDatabaseWrapper


def check(value: object) -> float | None:
    """*value* as seconds (None: no limit given), or the caller's error."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = (
            f"statement_timeout must be a number of seconds or None, not "
            f"{type(value).__name__} {value!r}."
        )
        raise TypeError(msg)
    if not 0 <= value < math.inf:  # NaN fails too
        msg = (
            "statement_timeout must be a finite number of seconds, 0 or more (0 lifts "
            f"any limit for the unit), not {value!r}."
        )
        raise ValueError(msg)
    return float(value)


def _milliseconds(seconds: float) -> int:
    # At least 1 ms: 0 means "no limit" to the server, which a tiny limit is not.
    return max(1, round(seconds * 1000)) if seconds else 0


_PG_INTRANS = 2  # psycopg 3's and psycopg2's TransactionStatus values
_PG_INERROR = 3


def apply(conn: BaseDatabaseWrapper, seconds: float, depth: int) -> Any:
    """Set *seconds* (0: none) on *conn*'s open connection; return what was in force.

    *depth* tells nested limits apart (MariaDB keeps each saved value on the server).
    """
    raw = conn.connection
    vendor = conn.vendor
    if vendor == "sqlite":
        return _sqlite_apply(conn, raw, seconds)
    if vendor == "postgresql" and transaction_pooled(conn):
        return _PerTransaction.apply(conn, raw, str(_milliseconds(seconds)), depth)
    with conn.wrap_database_errors, raw.cursor() as cursor:
        if vendor == "postgresql":
            ms = str(_milliseconds(seconds))
            # In atomic() (begun at its first statement) or in a transaction already.
            if conn.in_atomic_block or not conn.autocommit or raw.info.transaction_status:
                # Its idle time is the caller's: an idle limit would end its session.
                cursor.execute(
                    "SELECT current_setting('statement_timeout'), "
                    "set_config('statement_timeout', %s, false)",
                    [ms],
                )
                return cursor.fetchone()[0], None, True
            cursor.execute(
                "SELECT current_setting('statement_timeout'), "
                "current_setting('idle_in_transaction_session_timeout'), "
                "set_config('statement_timeout', %s, false), "
                "set_config('idle_in_transaction_session_timeout', %s, false)",
                [ms, ms],
            )
            old = cursor.fetchone()
            return old[0], old[1], False
        if vendor == "mysql":
            # SET cannot return a value: the old one stays in a session variable.
            name, value = _mysql_variable(conn, seconds)
            cursor.execute(
                f"SET @django_thread_limit{depth} = @@SESSION.{name}, SESSION {name} = %s", [value]
            )
            return depth
    msg = (
        f"statement_timeout is supported on PostgreSQL, MariaDB, MySQL and SQLite, not "
        f"on {conn.display_name} (database {conn.alias!r})."
    )
    raise NotSupportedError(msg)


def put_back(conn: BaseDatabaseWrapper, saved: Any) -> None:
    """Restore what :func:`apply` returned on *conn*'s (same, open) connection."""
    raw = conn.connection
    vendor = conn.vendor
    if vendor == "sqlite":
        _sqlite_install(conn, raw, saved)
        return
    if isinstance(saved, _PerTransaction):
        saved.put_back(conn, raw)
        return
    if vendor == "postgresql":
        statement, idle, set_in_transaction = saved
        if raw.info.transaction_status == _PG_INERROR and set_in_transaction:
            # Nothing runs in a failed transaction; settings are transactional, so
            # its rollback (the only way out) undoes ours.
            return
        with conn.wrap_database_errors, raw.cursor() as cursor:
            if idle is None:
                cursor.execute("SELECT set_config('statement_timeout', %s, false)", [statement])
            else:
                cursor.execute(
                    "SELECT set_config('statement_timeout', %s, false), "
                    "set_config('idle_in_transaction_session_timeout', %s, false)",
                    [statement, idle],
                )
        return
    name, _ = _mysql_variable(conn, 0)
    with conn.wrap_database_errors, raw.cursor() as cursor:
        cursor.execute(
            f"SET SESSION {name} = @django_thread_limit{saved}, @django_thread_limit{saved} = NULL"
        )


def forget(conn: BaseDatabaseWrapper, saved: Any) -> None:
    """*conn*'s connection closed with the limit set: nothing of it may stay behind."""
    if isinstance(saved, _PerTransaction):
        saved.detach(conn)


# --- PostgreSQL behind a pooler in transaction mode ---------------------------------


def transaction_pooled(conn: BaseDatabaseWrapper) -> bool:
    """Whether *conn* goes through a pooler in transaction mode (PgBouncer's).

    ``DISABLE_SERVER_SIDE_CURSORS`` is Django's documented setting for it. There each
    transaction may run on another server session, and a setting made outside a
    transaction stays on the session that ran it, for whichever client comes next.
    """
    return bool(conn.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS"))


class _PerTransaction:
    """A limit set with ``set_config(..., true)`` at each transaction's first
    statement, so that it ends with the transaction (Django's execute wrapper).

    Statements run in autocommit are not limited: nothing could set a limit for them
    without leaving it on a server session other clients get.
    """

    __slots__ = ("depth", "idle", "milliseconds", "old")

    def __init__(self, milliseconds: str, depth: int, *, idle: bool) -> None:
        self.milliseconds = milliseconds
        self.depth = depth
        self.idle = idle  # not in the caller's transaction: its idle time is the unit's
        self.old: str | None = None  # in force in the transaction the limit began in

    @classmethod
    def apply(cls, conn: Any, raw: Any, milliseconds: str, depth: int) -> _PerTransaction:
        callers = bool(conn.in_atomic_block or not conn.autocommit)
        limit = cls(milliseconds, depth, idle=not callers)
        limit.detach(conn)  # one of a connection closed during the unit
        if raw.info.transaction_status:  # already in a transaction: set it now
            limit.old = limit.set_local(conn, raw)
        conn.execute_wrappers.append(limit)
        return limit

    def set_local(self, conn: Any, raw: Any) -> str:
        """Set the limit for the current (or, in autocommit off, new) transaction."""
        with conn.wrap_database_errors, raw.cursor() as cursor:
            idle = ", set_config('idle_in_transaction_session_timeout', %s, true)"
            cursor.execute(
                "SELECT current_setting('statement_timeout'), "
                f"set_config('statement_timeout', %s, true){idle if self.idle else ''}",
                [self.milliseconds] * (1 + self.idle),
            )
            return str(cursor.fetchone()[0])

    def __call__(self, execute: Any, sql: Any, params: Any, many: bool, context: Any) -> Any:
        conn = context["connection"]
        raw = conn.connection
        if (
            not conn.autocommit
            and not raw.info.transaction_status  # this statement begins the transaction
            and [w for w in conn.execute_wrappers if type(w) is _PerTransaction][-1] is self
        ):
            self.set_local(conn, raw)
        return execute(sql, params, many, context)

    def detach(self, conn: Any) -> None:
        conn.execute_wrappers[:] = [
            w
            for w in conn.execute_wrappers
            if not (type(w) is _PerTransaction and w.depth == self.depth)
        ]

    def put_back(self, conn: Any, raw: Any) -> None:
        self.detach(conn)
        if self.old is not None and raw.info.transaction_status == _PG_INTRANS:
            # Still in the transaction it was set in (the caller's): the rest of it
            # runs under what was in force before.
            with conn.wrap_database_errors, raw.cursor() as cursor:
                cursor.execute("SELECT set_config('statement_timeout', %s, true)", [self.old])


def _mysql_variable(conn: Any, seconds: float) -> tuple[str, float | int]:
    if conn.mysql_is_mariadb:
        return "max_statement_time", max(seconds, 1e-6) if seconds else 0
    return "max_execution_time", _milliseconds(seconds)


# --- SQLite ------------------------------------------------------------------------

_SQLITE_STATE = "_django_thread_limit"  # on the wrapper: (raw connection, _SqliteLimit)
_SQLITE_EVERY = 1000  # virtual machine instructions between two looks at the clock


class _SqliteLimit:
    """One limit on one SQLite connection: the running statement's deadline."""

    __slots__ = ("deadline", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = math.inf

    def started(self, statement: str) -> None:
        if not statement.startswith("--"):  # "-- trigger name": still the same statement
            self.deadline = time.monotonic() + self.seconds

    def expired(self) -> bool:
        # True makes SQLite stop the statement with SQLITE_INTERRUPT ("interrupted").
        return time.monotonic() > self.deadline


def _sqlite_apply(conn: BaseDatabaseWrapper, raw: Any, seconds: float) -> Any:
    state = getattr(conn, _SQLITE_STATE, None)
    old = state[1] if state is not None and state[0] is raw else None
    _sqlite_install(conn, raw, _SqliteLimit(seconds) if seconds else None)
    return old


def _sqlite_install(conn: BaseDatabaseWrapper, raw: Any, limit: _SqliteLimit | None) -> None:
    if limit is None:
        raw.set_progress_handler(None, 0)
        raw.set_trace_callback(None)
        setattr(conn, _SQLITE_STATE, None)
    else:
        raw.set_trace_callback(limit.started)
        raw.set_progress_handler(limit.expired, _SQLITE_EVERY)
        setattr(conn, _SQLITE_STATE, (raw, limit))
