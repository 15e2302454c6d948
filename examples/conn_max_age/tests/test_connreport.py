from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from ledger.management.commands.connreport import check
from ledger.workload import SETTINGS, Result, run

pytestmark = pytest.mark.django_db(transaction=True)


def test_command_reports_every_setting_and_succeeds() -> None:
    out = io.StringIO()
    call_command("connreport", units=40, stdout=out)
    report = out.getvalue()
    for setting in SETTINGS:
        if setting.pool and connection.vendor != "postgresql":
            assert "native pool is PostgreSQL only" in report
        else:
            assert setting.label in report
    assert "OK: django_thread failed no unit and left no connection open" in report


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.label)
def test_django_thread_leaves_nothing_and_stdlib_leaves_its_threads(setting) -> None:
    if setting.pool and connection.vendor != "postgresql":
        pytest.skip("Django's native pool is PostgreSQL only")
    ours = run(setting, "django_thread", units=40)
    plain = run(setting, "threading", units=40)

    assert (ours.failed, plain.failed) == (0, 0)
    assert ours.held_at_end <= (8 if setting.pool else 0)
    assert plain.held_at_end == 8  # 4 workers + 4 threads, until the GC runs
    if setting.max_age == 0:
        # A new connection (or a pool checkout) for every unit; on MariaDB, Django
        # also opens a short-lived one per thread to read the server's version.
        assert ours.connects >= ours.units
        assert ours.reused == 0
    else:
        # Persistent connections: only a thread's first unit connects (at most 8
        # threads: 4 threads, and up to 4 workers, as many as the pool started).
        assert ours.reused >= ours.units - 8
        assert plain.reused >= plain.units - 8


def test_check_flags_what_did_not_happen() -> None:
    def result(impl: str, held: int, failed: int = 0) -> Result:
        return Result("CONN_MAX_AGE=0", impl, 10, 10, 0, 10, held, failed, 1.0)

    assert check([result("django_thread", 0), result("threading", 4)], pool_size=8) == []
    problems = check([result("django_thread", 2, failed=1), result("threading", 0)], pool_size=8)
    assert problems == [
        "CONN_MAX_AGE=0 / django_thread: 1 units failed: []",
        "CONN_MAX_AGE=0 / django_thread: 2 connections left open",
        "CONN_MAX_AGE=0 / threading: expected the plain threads to leave connections",
    ]
    with pytest.raises(CommandError):
        call_command(
            "connreport",
            units=0,
            threads=0,
            setting=["CONN_MAX_AGE=60"],
            stdout=io.StringIO(),
        )
