"""Talking to the database server behind the workload's back: counting, killing, limits.

Uses a DatabaseWrapper of its own (not the thread's `connection`), so the scenarios'
setting changes and cleanup never touch it and it never shows up in its own counts.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

from django.db import connections
from django.db.utils import load_backend

LIMITED_ALIAS = "limited"
CONNECTION_LIMIT = 6


class Server:
    def __init__(self) -> None:
        settings = copy.deepcopy(connections["default"].settings_dict)
        self.vendor = connections["default"].vendor
        self.db = load_backend(settings["ENGINE"]).DatabaseWrapper(settings, "server")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.db.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description else []

    def sessions(self, user: str | None = None) -> list[int]:
        """Ids of the sessions on this database (of *user*, if given), ours excluded."""
        if self.vendor == "postgresql":
            sql = (
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
            column = "usename"
        else:
            sql = (
                "SELECT id FROM information_schema.processlist"
                " WHERE db = DATABASE() AND id <> CONNECTION_ID()"
            )
            column = "user"
        if user is not None:
            sql += f" AND {column} = %s"
        return [row[0] for row in self.query(sql, (user,) if user else ())]

    def kill(self, session: int) -> None:
        """What a DBA, a failover or a proxy restart does to a session."""
        if self.vendor == "postgresql":
            self.query("SELECT pg_terminate_backend(%s)", (session,))
        else:
            with contextlib.suppress(Exception):  # it may have ended meanwhile
                self.query(f"KILL CONNECTION {int(session)}")

    @contextlib.contextmanager
    def limited_alias(self) -> Iterator[str]:
        """A database alias logging in as a user capped at CONNECTION_LIMIT sessions.

        The "too many connections" scenario piles connections up against this user's
        own limit, so the shared server's max_connections is never reached. The user
        and alias are made here, at run time: settings.py cannot name a user that does
        not exist yet (system checks would try to log in with it).
        """
        user, password = "django_thread_limited", "limited-example"
        if self.vendor == "postgresql":
            if not self.query("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)):
                self.query(f"CREATE ROLE {user} LOGIN PASSWORD %s", (password,))
            self.query(f"ALTER ROLE {user} CONNECTION LIMIT {CONNECTION_LIMIT}")
        else:
            self.query(f"CREATE USER IF NOT EXISTS '{user}'@'%%' IDENTIFIED BY %s", (password,))
            self.query(f"ALTER USER '{user}'@'%%' WITH MAX_USER_CONNECTIONS {CONNECTION_LIMIT}")
            database = connections["default"].settings_dict["NAME"]
            self.query(f"GRANT SELECT ON `{database}`.* TO '{user}'@'%%'")
        connections.settings[LIMITED_ALIAS] = {
            **copy.deepcopy(connections["default"].settings_dict),
            "USER": user,
            "PASSWORD": password,
        }
        try:
            yield LIMITED_ALIAS
        finally:
            connections[LIMITED_ALIAS].close()
            del connections[LIMITED_ALIAS]
            del connections.settings[LIMITED_ALIAS]

    def close(self) -> None:
        self.db.close()


def idle_timeout_options(vendor: str) -> tuple[dict[str, str], float]:
    """OPTIONS making the server drop *our* sessions once idle, and the idle time."""
    if vendor == "postgresql":
        return {"options": "-c idle_session_timeout=200"}, 0.2
    return {"init_command": "SET SESSION wait_timeout=1"}, 1.0  # whole seconds only


@contextlib.contextmanager
def connection_settings(alias: str = "default", **changes: Any) -> Iterator[None]:
    """Change CONN_MAX_AGE, CONN_HEALTH_CHECKS or OPTIONS for connections opened next.

    A real project sets these once in settings.py; the scenarios change them between
    runs. Every thread's connection reads them from this one dict when it opens.
    """
    db = connections.settings[alias]
    saved = copy.deepcopy(db)
    options = changes.pop("OPTIONS", {})
    db.update(changes)
    db["OPTIONS"] = {**db.get("OPTIONS", {}), **options}
    try:
        yield
    finally:
        db.clear()
        db.update(saved)
