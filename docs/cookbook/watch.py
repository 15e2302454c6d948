"""Ask the database server which connections are open: the tutorial's two helpers.

Copy this file into your own project to follow the tutorial there. It needs nothing but
Django. Each call opens a private connection with the driver, so that it is not counted
itself and is not tidied by the code it watches.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from django.db import connections

COUNT = {
    "postgresql": (
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
    ),
    "mysql": (
        "SELECT id FROM information_schema.processlist"
        " WHERE db = DATABASE() AND id <> CONNECTION_ID()"
    ),
}


def _sessions(alias: str) -> list[int]:
    wrapper = connections[alias]
    if wrapper.vendor == "sqlite":
        # No server: each connection is an open handle on the file, in this process
        # (Linux's /proc; on macOS use `lsof` on the file instead).
        target = Path(wrapper.settings_dict["NAME"]).resolve()
        handles = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                if Path(os.readlink(f"/proc/self/fd/{fd}")) == target:
                    handles.append(int(fd))
            except OSError:  # closed while we looked
                continue
        return handles
    # The driver's own connection, made from the alias's settings: Django neither
    # counts nor tracks it (no connection_created signal).
    raw: Any = wrapper.get_new_connection(wrapper.get_connection_params())
    try:
        cursor = raw.cursor()
        cursor.execute(COUNT[wrapper.vendor])
        return [int(row[0]) for row in cursor.fetchall()]
    finally:
        raw.close()


def open_connections(alias: str = "default") -> int:
    """How many connections to *alias*'s database are open, as the server sees them.

    A server notices a client's close a few milliseconds late, so this reads until two
    reads 50 ms apart agree (for at most two seconds).
    """
    previous, deadline = len(_sessions(alias)), time.monotonic() + 2
    while time.monotonic() < deadline:
        time.sleep(0.05)
        current = len(_sessions(alias))
        if current == previous:
            return current
        previous = current
    return previous


def kill_connections(alias: str = "default") -> int:
    """End every other session on *alias*'s database, as a restart or failover would.

    PostgreSQL and MariaDB/MySQL only (SQLite has no server). Returns how many it ended.
    """
    wrapper = connections[alias]
    sessions = _sessions(alias)
    raw: Any = wrapper.get_new_connection(wrapper.get_connection_params())
    try:
        cursor = raw.cursor()
        for session in sessions:
            if wrapper.vendor == "postgresql":
                cursor.execute("SELECT pg_terminate_backend(%s)", [session])
            else:
                cursor.execute(f"KILL CONNECTION {session}")
    finally:
        raw.close()
    return len(sessions)
