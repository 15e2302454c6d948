from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings
from django.db import connections

from tests.server import ServerProbe, probe_for

VENDOR: str = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _server_unreachable() -> str | None:
    """Why the configured database server cannot be reached, or None if it can."""
    db = settings.DATABASES["default"]
    try:
        if VENDOR == "postgresql":
            import psycopg  # noqa: PLC0415

            psycopg.connect(
                host=db["HOST"],
                port=db["PORT"],
                user=db["USER"],
                password=db["PASSWORD"],
                dbname="postgres",
                connect_timeout=3,
            ).close()
        elif VENDOR == "mysql":
            import MySQLdb  # noqa: PLC0415

            MySQLdb.connect(
                host=db["HOST"],
                port=int(db["PORT"]),
                user=db["USER"],
                password=db["PASSWORD"],
                connect_timeout=3,
            ).close()
    except Exception as exc:  # ImportError too: the driver is part of "reachable"
        return f"{VENDOR} at {db.get('HOST')}:{db.get('PORT')} is unreachable: {exc}"
    return None


def pytest_report_header() -> str:
    return f"django-thread tests on {VENDOR}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = _server_unreachable()
    if reason is None:
        return
    if IN_CI:
        pytest.exit(f"CI requires every database server: {reason}", returncode=1)
    for item in items:
        item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def probe(django_db_setup: None) -> Iterator[ServerProbe]:
    server = probe_for("default")
    yield server
    server.close()


def requires_server(probe: ServerProbe) -> None:
    if not probe.can_kill:
        pytest.skip(f"needs a database server that drops connections; {VENDOR} has none")


@pytest.fixture
def server(probe: ServerProbe) -> ServerProbe:
    """A probe on a real server (PostgreSQL or MariaDB); skips on SQLite."""
    requires_server(probe)
    return probe


ConnSettings = Callable[..., None]


@pytest.fixture
def conn_settings(django_db_setup: None) -> Iterator[ConnSettings]:
    """Change CONN_MAX_AGE, CONN_HEALTH_CHECKS and OPTIONS for connections opened next.

    Django reads these from each alias's settings dict when a connection opens, and
    every thread's DatabaseWrapper shares that dict, so worker threads see the change.
    """
    saved = {alias: dict(connections.settings[alias]) for alias in connections}

    def change(*, max_age: int | None = 0, health_checks: bool = False, **options: Any) -> None:
        # Close what the main thread opened under the old settings first: closing it
        # under new ones fails (a connection made outside a pool, closed as if pooled).
        connections.close_all()
        for alias in connections:
            db = connections.settings[alias]
            db["CONN_MAX_AGE"] = max_age
            db["CONN_HEALTH_CHECKS"] = health_checks
            db["OPTIONS"] = {**saved[alias].get("OPTIONS", {}), **options}

    yield change
    # The main thread may hold a connection opened with the changed settings.
    connections.close_all()
    for alias, values in saved.items():
        connections.settings[alias].clear()
        connections.settings[alias].update(values)


CONN_POLICIES = [
    pytest.param({"max_age": 0, "health_checks": False}, id="age0"),
    pytest.param({"max_age": 0, "health_checks": True}, id="age0-checks"),
    pytest.param({"max_age": 60, "health_checks": False}, id="age60"),
    pytest.param({"max_age": 60, "health_checks": True}, id="age60-checks"),
    pytest.param({"max_age": None, "health_checks": False}, id="persistent"),
    pytest.param({"max_age": None, "health_checks": True}, id="persistent-checks"),
]


@pytest.fixture(params=CONN_POLICIES)
def conn_policy(request: pytest.FixtureRequest, conn_settings: ConnSettings) -> dict[str, Any]:
    """Run the test under every CONN_MAX_AGE x CONN_HEALTH_CHECKS combination."""
    policy: dict[str, Any] = request.param
    conn_settings(**policy)
    return policy


@pytest.fixture
def no_gc() -> Iterator[None]:
    """Keep the cyclic garbage collector from hiding a leak (or closing one for us)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def settle(probe: ServerProbe, expected: int, timeout: float = 5.0) -> int:
    """The server's count once it equals *expected*, or whatever it is after *timeout*.

    A server notices a closed client socket asynchronously (a PostgreSQL backend takes
    a few milliseconds to exit), so counts are polled briefly rather than read once.
    """
    deadline = time.monotonic() + timeout
    while True:
        count = probe.count()
        if count == expected or time.monotonic() > deadline:
            return count
        time.sleep(0.02)
