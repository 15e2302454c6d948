from __future__ import annotations

import io
import time

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from receipts.models import Receipt

pytestmark = pytest.mark.django_db(transaction=True)


def run(variant: str) -> dict[str, str]:
    out = io.StringIO()
    tasks = {"default": settings.TASKS_VARIANTS[variant]}
    with override_settings(TASKS=tasks, TASKS_VARIANT=variant):
        call_command("tasksrun", count=30, stdout=out)
    return dict(line.split(": ", 1) for line in out.getvalue().splitlines())


@pytest.mark.parametrize(
    ("variant", "backend"),
    [
        ("threads", "django_thread.tasks.ThreadPoolBackend"),
        ("database", "django_tasks_db.backend.DatabaseBackend"),
        ("rq", "django_tasks_rq.backend.RQBackend"),
    ],
)
def test_the_same_tasks_run_on_each_backend(variant: str, backend: str) -> None:
    report = run(variant)
    assert report == {
        "variant": variant,
        "backend": backend,
        "tasks": "31",
        "statuses": "SUCCESSFUL",
        "rows": "31",
    }
    assert Receipt.objects.filter(variant=variant).count() == 31


def sessions() -> int:
    """Other sessions on this database, as PostgreSQL sees them, once two reads agree.

    A server lists a closed session for a few milliseconds, and earlier tests' workers
    (RQ's work horses, db_worker) may still be going away: read until steady.
    """

    def read() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
            return int(cursor.fetchone()[0])

    previous, deadline = read(), time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.05)
        current = read()
        if current == previous:
            return current
        previous = current
    return previous


def test_the_thread_pool_leaves_no_connection_but_the_callers() -> None:
    before = sessions() if connection.vendor == "postgresql" else 0
    run("threads")
    if connection.vendor == "postgresql":
        assert sessions() == before
    assert Receipt.objects.filter(variant="threads").count() == 31
