"""Run a django-thread pool under a quick-start `DATABASES` block, on the CI server.

The quick start's settings blocks are copy-paste text for the reader's project; this
checks each one for real: it takes the block's `default` entry (engine, CONN_MAX_AGE,
health checks, OPTIONS, ...), keeps only the test run's server address and database
name, and runs a pool of four workers over twenty tasks under it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from django.db import connection, connections
from django.db.backends.signals import connection_created

from cookbook.server import open_connections
from django_thread import ThreadPoolExecutor

WORKERS = 4
TASKS = 20
# Where the test run's database lives: never taken from a block.
KEPT = ("NAME", "HOST", "PORT", "USER", "PASSWORD", "TEST")


@dataclass
class Report:
    answered: int  # tasks that got their query's answer
    sessions: int  # distinct server sessions (SQLite: connections) the tasks used
    open_after: int  # connections the server still sees after shutdown()


def _session_id() -> object:
    vendor = connection.vendor
    if vendor == "sqlite":
        return None
    query = "SELECT pg_backend_pid()" if vendor == "postgresql" else "SELECT CONNECTION_ID()"
    with connection.cursor() as cursor:
        cursor.execute(query)
        return cursor.fetchone()[0]


_saved: dict[str, Any] = {}


def restore_settings() -> None:
    """Put the test run's own settings back (run_pool() does, unless told not to)."""
    connections["default"].close()
    if _saved:
        live = connections.settings["default"]
        live.clear()
        live.update(_saved)
        _saved.clear()


def run_pool(databases: dict[str, dict[str, Any]], *, restore: bool = True) -> Report:
    """Run the pool under *databases*["default"].

    The live settings are restored after, unless *restore* is false: then they stay, for
    the page to go on under them (a native pool's close_pool()), until restore_settings().
    """
    block = databases["default"]
    # Every thread's DatabaseWrapper is built from this very dict, so changing it in
    # place (and back) is what a settings change would do, without a new process.
    live = connections.settings["default"]
    if block["ENGINE"] != live["ENGINE"]:
        msg = f"a {block['ENGINE']} block cannot run on {live['ENGINE']}"
        raise ValueError(msg)
    _saved.update(live)
    connections["default"].close()
    live.update({k: v for k, v in block.items() if k not in KEPT})
    live.setdefault("OPTIONS", {})
    created: list[object] = []

    def count(sender: object, **kwargs: object) -> None:
        created.append(kwargs["connection"])

    connection_created.connect(count)
    barrier = threading.Barrier(WORKERS)

    def task(n: int) -> tuple[int, object]:
        if n < WORKERS:  # the first round waits until every worker holds a task
            barrier.wait(timeout=10)
        with connection.cursor() as cursor:
            cursor.execute("SELECT %s", [n])
            (answer,) = cursor.fetchone()
        return answer, _session_id()

    try:
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            results = list(pool.map(task, range(TASKS)))
        ids = {session for _, session in results}
        sessions = len(created) if ids == {None} else len(ids)
        answered = sum(1 for n, (answer, _) in enumerate(results) if answer == n)
        return Report(answered, sessions, open_connections())
    finally:
        connection_created.disconnect(count)
        if restore:
            restore_settings()
