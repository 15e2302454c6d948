"""The Django app's system checks, each both ways, and silenced the usual way."""

from __future__ import annotations

from io import StringIO
from typing import Any

import django
import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.test.utils import modify_settings, override_settings

from django_thread import check_pooled_connection
from django_thread.checks import POOL_CHECK_DJANGO, database_messages
from tests.settings import VENDOR, database

SERVER = "postgresql" if VENDOR == "sqlite" else VENDOR


def ids(**settings: Any) -> list[str | None]:
    db = {**database("test", SERVER), **settings}
    return [message.id for message in database_messages({"default": db})]


def test_connecting_per_unit_is_w001() -> None:
    assert ids(CONN_MAX_AGE=0) == ["django_thread.W001"]


def test_the_native_pool_is_not_w001() -> None:
    assert ids(CONN_MAX_AGE=0, OPTIONS={"pool": True}) == []


def test_a_pool_check_is_e002_before_django_6_1() -> None:
    expected = ["django_thread.E002"] if django.VERSION < POOL_CHECK_DJANGO else []
    for check in (check_pooled_connection, None):  # Django refuses any, even None
        pool = {"max_size": 4, "check": check}
        assert ids(CONN_MAX_AGE=0, OPTIONS={"pool": pool}) == expected
        assert ids(CONN_MAX_AGE=0, CONN_HEALTH_CHECKS=True, OPTIONS={"pool": pool}) == expected
    assert ids(CONN_MAX_AGE=0, OPTIONS={"pool": {"max_size": 4}}) == []


@pytest.mark.skipif(django.VERSION >= POOL_CHECK_DJANGO, reason="no E002 on Django 6.1")
def test_e002_names_the_alias_the_version_the_error_and_the_way_out() -> None:
    pool = {"check": check_pooled_connection}
    db = {**database("test", SERVER), "CONN_MAX_AGE": 0, "OPTIONS": {"pool": pool}}
    [message] = database_messages({"replica": db})
    assert message.is_serious()
    assert "'replica'" in message.msg
    assert f"Django {django.VERSION[0]}.{django.VERSION[1]} " in message.msg
    assert "got multiple values for keyword argument 'check'" in message.msg
    assert "CONN_HEALTH_CHECKS = True" in (message.hint or "")
    assert "Django 6.1 or newer" in (message.hint or "")
    assert "#django-thread-e002" in (message.hint or "")


def test_persistent_connections_without_health_checks_are_w002() -> None:
    assert ids(CONN_MAX_AGE=None) == ["django_thread.W002"]
    assert ids(CONN_MAX_AGE=60) == ["django_thread.W002"]


def test_persistent_connections_with_health_checks_pass() -> None:
    assert ids(CONN_MAX_AGE=None, CONN_HEALTH_CHECKS=True) == []


def test_sqlite_is_not_checked() -> None:
    assert database_messages({"default": database("test", "sqlite")}) == []


def test_messages_name_the_alias_and_the_docs() -> None:
    db = {**database("test", SERVER), "CONN_MAX_AGE": 0}
    [message] = database_messages({"default": db})
    assert "'default'" in message.msg
    assert "PgBouncer" in (message.hint or "")
    assert "#django-thread-w001" in (message.hint or "")


# override_settings(DATABASES=...) warns that open connections are not reset: this
# test opens none, the checks only read the settings.
@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_manage_py_check_runs_them_only_with_the_app_installed() -> None:
    db = {**database("test", SERVER), "CONN_MAX_AGE": 0}
    with override_settings(DATABASES={"default": db}):
        assert "django_thread.W001" not in [m.id for m in run_checks()]
        with modify_settings(INSTALLED_APPS={"append": "django_thread"}):
            out = StringIO()
            call_command("check", stderr=out, stdout=out)
            assert "django_thread.W001" in out.getvalue()
            with override_settings(SILENCED_SYSTEM_CHECKS=["django_thread.W001"]):
                out = StringIO()
                call_command("check", stderr=out, stdout=out)
                assert "django_thread.W001" not in out.getvalue()


@pytest.mark.skipif(django.VERSION < (6, 0), reason="django.tasks needs Django 6.0 or newer")
def test_bad_tasks_options_are_e003_naming_the_valid_keys() -> None:
    from django_thread.checks import tasks_messages  # noqa: PLC0415

    ours = "django_thread.tasks.ThreadPoolBackend"
    tasks = {
        "default": {"BACKEND": ours, "OPTIONS": {"MAX_WORKER": 4}},
        "ok": {"BACKEND": ours, "OPTIONS": {"MAX_WORKERS": 4}},
        "inf": {"BACKEND": ours, "OPTIONS": {"SHUTDOWN_TIMEOUT": float("inf")}},
        "theirs": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"},
    }
    messages = tasks_messages(tasks)
    assert [(m.id, m.obj) for m in messages] == [
        ("django_thread.E003", "TASKS['default']"),
        ("django_thread.E003", "TASKS['inf']"),
    ]
    known = "MAX_WORKERS, MAX_RESULTS, ENQUEUE_ON_COMMIT, SHUTDOWN_TIMEOUT, STATEMENT_TIMEOUT"
    assert f"known: {known}" in messages[0].msg
    with (
        modify_settings(INSTALLED_APPS={"append": "django_thread"}),
        override_settings(TASKS=tasks),
    ):
        ids = [m.id for m in run_checks(tags=["django_thread"])]
    assert ids.count("django_thread.E003") == 2
