"""Ask the database server how many connections are open: the docs' measuring stick."""

from __future__ import annotations

from tests.server import PostgresProbe, probe_for


def open_connections(alias: str = "default") -> int:
    """Connections open to *alias*'s database, as the server sees them, once steady.

    PostgreSQL and MariaDB notice a closed socket a few milliseconds late, so this
    reads until two reads 50 ms apart agree. On SQLite it counts this process's open
    handles on the database file.
    """
    probe = probe_for(alias)
    try:
        return probe.steady()
    finally:
        probe.close()


def kill_connections(alias: str = "default") -> int:
    """Terminate every session on *alias*'s database, as a restart or failover would.

    Returns how many were killed. PostgreSQL and MariaDB only: SQLite has no server.
    """
    probe = probe_for(alias)
    try:
        sessions = probe.backend_ids()
        for session in sessions:
            probe.kill(session)
        return len(sessions)
    finally:
        probe.close()


def create_database(name: str, alias: str = "default") -> None:
    """Create database *name* on *alias*'s server (PostgreSQL and MariaDB)."""
    probe = probe_for(alias)
    try:
        probe.create_database(name)
    finally:
        probe.close()


def drop_database(name: str, alias: str = "default") -> None:
    """``DROP DATABASE`` *name* on *alias*'s PostgreSQL server, as a test runner does."""
    probe = probe_for(alias)
    try:
        if not isinstance(probe, PostgresProbe):
            msg = "drop_database() is written for PostgreSQL"
            raise NotImplementedError(msg)
        probe.conn.execute(f'DROP DATABASE "{name}"')
    finally:
        probe.close()
