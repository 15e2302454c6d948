"""Ask the database server what it sees: the only honest way to count connections.

Each probe uses its own driver-level connection (not Django's), so it is not counted,
is never closed by the code under test, and can kill other sessions.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django.db import connections


class ServerProbe(ABC):
    """Counts and kills the connections that Django code has open to one database."""

    vendor: str
    can_kill = True

    def __init__(self, alias: str = "default") -> None:
        self.settings = connections[alias].settings_dict
        self.database = str(self.settings["NAME"])

    @abstractmethod
    def backend_ids(self) -> list[int]:
        """Server-side ids of the sessions connected to the database, probe excluded."""

    def count(self) -> int:
        return len(self.backend_ids())

    def steady(self, timeout: float = 2.0) -> int:
        """The count once two reads 50 ms apart agree (or the last read after *timeout*).

        A server notices a closed client socket a few milliseconds late, so a count taken
        right after a close may still include it. Baselines are taken with this.
        """
        previous, deadline = self.count(), time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.05)
            current = self.count()
            if current == previous:
                return current
            previous = current
        return previous

    def drained(self, timeout: float, ids: Iterable[int] | None = None) -> int:
        """How many sessions are listed once none are, or at the last read after *timeout*.

        Of *ids* only, if given (sessions just killed), else of all. For sessions that
        should be gone: a server lists a closed or killed session until it has torn it
        down, a few milliseconds later.
        """
        wanted = None if ids is None else set(ids)
        deadline = time.monotonic() + timeout
        while True:
            listed = self.backend_ids()
            left = len(listed) if wanted is None else len(wanted.intersection(listed))
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.005)

    @abstractmethod
    def kill(self, backend_id: int) -> None:
        """Terminate one session, the way a DBA, a failover or a proxy would."""

    def create_database(self, name: str) -> None:
        """Create database *name* on the server unless it exists."""
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class PostgresProbe(ServerProbe):
    vendor = "postgresql"

    def __init__(self, alias: str = "default") -> None:
        import psycopg  # noqa: PLC0415 - only needed on PostgreSQL

        super().__init__(alias)
        self.conn = psycopg.connect(
            host=self.settings["HOST"],
            port=self.settings["PORT"],
            user=self.settings["USER"],
            password=self.settings["PASSWORD"],
            dbname="postgres",
            autocommit=True,
        )

    def backend_ids(self) -> list[int]:
        rows = self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s"
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
            (self.database,),
        ).fetchall()
        return [row[0] for row in rows]

    def kill(self, backend_id: int) -> None:
        self.conn.execute("SELECT pg_terminate_backend(%s)", (backend_id,))

    def create_database(self, name: str) -> None:
        exists = self.conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if not exists.fetchone():
            self.conn.execute(f'CREATE DATABASE "{name}"')

    def close(self) -> None:
        self.conn.close()


class MariaDBProbe(ServerProbe):
    vendor = "mariadb"

    def __init__(self, alias: str = "default") -> None:
        import MySQLdb  # noqa: PLC0415 - only needed on MariaDB

        super().__init__(alias)
        self.conn: Any = MySQLdb.connect(
            host=self.settings["HOST"],
            port=int(self.settings["PORT"]),
            user=self.settings["USER"],
            password=self.settings["PASSWORD"],
            autocommit=True,
        )

    def _query(self, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
        cursor = self.conn.cursor()
        try:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def backend_ids(self) -> list[int]:
        rows = self._query(
            "SELECT id FROM information_schema.processlist WHERE db = %s AND id <> CONNECTION_ID()",
            (self.database,),
        )
        return [int(row[0]) for row in rows]

    def kill(self, backend_id: int) -> None:
        try:
            self._query(f"KILL CONNECTION {int(backend_id)}")
        except Exception as exc:  # already gone: 1094 "Unknown thread id"
            if exc.args and exc.args[0] == 1094:
                return
            raise

    def create_database(self, name: str) -> None:
        self._query(f"CREATE DATABASE IF NOT EXISTS `{name}`")

    def close(self) -> None:
        self.conn.close()


class SQLiteProbe(ServerProbe):
    """SQLite has no server: count this process's open file handles on the file."""

    vendor = "sqlite"
    can_kill = False

    def backend_ids(self) -> list[int]:
        target = Path(self.database).resolve()
        fds = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                if Path(os.readlink(f"/proc/self/fd/{fd}")) == target:
                    fds.append(int(fd))
            except OSError:  # closed while we looked
                continue
        return fds

    def kill(self, backend_id: int) -> None:
        msg = "SQLite has no server to kill sessions on"
        raise NotImplementedError(msg)

    def create_database(self, name: str) -> None:
        pass  # the file is created on first connect


def probe_for(alias: str = "default") -> ServerProbe:
    vendor = connections[alias].vendor
    if vendor == "postgresql":
        return PostgresProbe(alias)
    if vendor == "mysql":
        return MariaDBProbe(alias)
    return SQLiteProbe(alias)
