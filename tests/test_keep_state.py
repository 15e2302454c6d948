"""django_thread.backends: session state a thread changed never reaches the next thread.

Thread A changes one kind of session state and ends; thread B, on the same server
session (PostgreSQL, MariaDB: put back on give-back) or on a new connection (SQLite:
not kept, since it cannot be put back), sees what a new connection sees.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from django_thread.backends import idle_count
from tests.conftest import VENDOR, ConnSettings, settle
from tests.server import ServerProbe
from tests.test_keep import KEEP, distinct, engine, in_thread, server_id, session

__all__ = ["engine"]  # the fixture, shared with tests/test_keep.py

pytestmark = pytest.mark.django_db(transaction=True)

ERROR = "error"  # what a probe that fails reads (a table that does not exist)

# (what thread A runs, what both threads read); {limit} is the time-limits variable,
# {isolation} the isolation level's (MariaDB's and MySQL's names).
STATES: dict[str, dict[str, tuple[list[str], str]]] = {
    "mysql": {
        "time_zone": (["SET SESSION time_zone = '+05:00'"], "SELECT @@SESSION.time_zone"),
        "sql_mode": (["SET SESSION sql_mode = 'ANSI_QUOTES'"], "SELECT @@SESSION.sql_mode"),
        "time_limit": (["SET SESSION {limit} = 7"], "SELECT @@SESSION.{limit}"),
        "user_variable": (["SET @ms_state = 42"], "SELECT @ms_state"),
        "temporary_table": (["CREATE TEMPORARY TABLE ms_state (x int)"], "SELECT 0 FROM ms_state"),
        "get_lock": (["SELECT GET_LOCK('ms_state', 0)"], "SELECT IS_USED_LOCK('ms_state')"),
        "names": (["SET NAMES latin1"], "SELECT @@character_set_client"),
        # Under LOCK TABLES, a table locked without an alias cannot be read with one.
        "table_lock": (["LOCK TABLES testapp_note READ"], "SELECT COUNT(*) FROM testapp_note n"),
        "transaction": (["START TRANSACTION"], "SELECT @@in_transaction"),
        # Set by Django's connect(), again as the next thread takes the connection.
        "isolation": (
            ["SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE"],
            "SELECT @@SESSION.{isolation}",
        ),
        "autocommit": (["SET autocommit = 0"], "SELECT @@autocommit"),
    },
    "postgresql": {
        "time_zone": (["SET TIME ZONE 'Asia/Tokyo'"], "SHOW TIME ZONE"),
        "statement_timeout": (["SET statement_timeout = 7000"], "SHOW statement_timeout"),
        "temporary_table": (["CREATE TEMPORARY TABLE ms_state (x int)"], "SELECT 0 FROM ms_state"),
        "advisory_lock": (
            ["SELECT pg_advisory_lock(4242)"],
            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
        ),
    },
    "sqlite3": {
        "temporary_table": (["CREATE TEMP TABLE ms_state (x int)"], "SELECT 0 FROM ms_state"),
        "attached": (
            ["ATTACH DATABASE ':memory:' AS ms_state"],
            "SELECT COUNT(*) FROM pragma_database_list WHERE name = 'ms_state'",
        ),
        "foreign_keys": (["PRAGMA foreign_keys = OFF"], "PRAGMA foreign_keys"),
        "query_only": (["PRAGMA query_only = ON"], "PRAGMA query_only"),
        "cache_size": (["PRAGMA cache_size = 7"], "PRAGMA cache_size"),
        "row_factory": ([], "row_factory"),  # a Python attribute, set below
    },
}


def read(sql: str) -> object:
    """*sql*'s one value on this thread's raw connection (Django's wrapper sees no error)."""
    conn: Any = connection  # the vendor's wrapper
    raw = conn.connection
    if VENDOR == "sqlite3" and sql == "row_factory":
        return raw.row_factory
    if VENDOR == "mysql":
        maria = conn.mysql_is_mariadb
        sql = sql.format(
            limit="max_statement_time" if maria else "max_execution_time",
            isolation="tx_isolation" if maria else "transaction_isolation",
        )
    cursor = raw.cursor()
    try:
        cursor.execute(sql)
        row = cursor.fetchone()
    except conn.Database.Error:
        return ERROR
    finally:
        cursor.close()
    return None if row is None else row[0]


def change(statements: list[str]) -> None:
    raw: Any = connection.connection
    if VENDOR == "sqlite3" and not statements:
        raw.row_factory = lambda cursor, row: row
        return
    for sql in statements:
        read(sql)


@pytest.mark.parametrize("kind", sorted(STATES[VENDOR]))
def test_a_threads_session_state_never_reaches_the_next_thread(
    kind: str, engine: Callable[[str], None], conn_settings: ConnSettings, probe: ServerProbe
) -> None:
    statements, sql = STATES[VENDOR][kind]
    conn_settings(max_age=None)
    engine(KEEP)

    def change_it() -> tuple[object, object, object]:
        key, before = session(), read(sql)
        change(statements)
        return key, before, read(sql)

    first, default, changed = in_thread(change_it)
    assert changed != default  # the change took, in the first thread
    second, seen = in_thread(lambda: (session(), read(sql)))
    assert seen == default
    if VENDOR == "sqlite3":
        assert distinct([first, second]) == 2  # not kept: it cannot be put back
    else:
        assert second == first  # the same session, put back
    assert settle(probe, 1) == 1


def test_sqlite_a_setting_set_back_is_kept(
    engine: Callable[[str], None], conn_settings: ConnSettings
) -> None:
    """What is compared is the settings, not whether a PRAGMA ran."""
    if VENDOR != "sqlite3":
        pytest.skip("SQLite only")
    conn_settings(max_age=None)
    engine(KEEP)

    def set_back() -> object:
        key = session()
        change(["PRAGMA foreign_keys = OFF", "PRAGMA foreign_keys = ON"])
        return key

    first = in_thread(set_back)
    assert distinct([first, in_thread(session)]) == 1


def test_what_connect_set_is_set_again_after_a_reset(
    engine: Callable[[str], None], conn_settings: ConnSettings, server: ServerProbe
) -> None:
    """MariaDB/MySQL: OPTIONS' init_command, sql_mode and collation survive the reset."""
    if VENDOR != "mysql":
        pytest.skip("PostgreSQL's DISCARD ALL keeps what the connect set")
    conn_settings(
        max_age=None,
        init_command="SET @ms_init = 'ran'",
        sql_mode="ANSI_QUOTES",
        collation="utf8mb4_unicode_ci",
    )
    engine(KEEP)
    sql = "SELECT @ms_init, @@SESSION.sql_mode, @@collation_connection"

    def undo_it() -> tuple[object, object]:
        key, before = session(), read_row(sql)
        change(["SET @ms_init = NULL", "SET SESSION sql_mode = ''", "SET NAMES latin1"])
        assert read_row(sql) == (None, "", "latin1_swedish_ci")
        return key, before

    first, configured = in_thread(undo_it)
    assert configured == ("ran", "ANSI_QUOTES", "utf8mb4_unicode_ci")
    second, seen = in_thread(lambda: (session(), read_row(sql)))
    assert second == first
    assert seen == configured


def read_row(sql: str) -> tuple[object, ...]:
    with connection.connection.cursor() as cursor:
        cursor.execute(sql)
        return tuple(cursor.fetchone())


def test_a_reset_that_fails_really_closes(
    engine: Callable[[str], None], conn_settings: ConnSettings, server: ServerProbe
) -> None:
    # Killed before its thread ends: kept (nothing found wrong without a round trip),
    # and the reset as the next thread takes it fails, so that thread connects anew.
    conn_settings(max_age=None)
    engine(KEEP)

    def killed_before_the_end() -> object:
        key = session()
        server.kill(server_id(key))
        assert server.drained(5, [server_id(key)]) == 0
        return key

    first = in_thread(killed_before_the_end)
    second = in_thread(session)  # no query fails
    assert first != second
    assert idle_count("default") == 1  # the second; the first was closed
    assert settle(server, 1) == 1
