"""The Django app's system checks, each both ways, and silenced the usual way."""

from __future__ import annotations

from io import StringIO
from typing import Any

import django
import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.test.utils import modify_settings, override_settings

from django_thread.checks import database_messages
from tests.settings import VENDOR, database

SERVER = "postgresql" if VENDOR == "sqlite" else VENDOR


def ids(**settings: Any) -> list[str | None]:
    db = {**database("test", SERVER), **settings}
    return [message.id for message in database_messages({"default": db})]


def test_connecting_per_unit_is_w001() -> None:
    assert ids(CONN_MAX_AGE=0) == ["django_thread.W001"]


def test_the_native_pool_is_not_w001() -> None:
    assert ids(CONN_MAX_AGE=0, OPTIONS={"pool": True}) == []


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
def test_bad_tasks_options_are_e002_naming_the_valid_keys() -> None:
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
        ("django_thread.E002", "TASKS['default']"),
        ("django_thread.E002", "TASKS['inf']"),
    ]
    assert "known: MAX_WORKERS, MAX_RESULTS, ENQUEUE_ON_COMMIT, SHUTDOWN_TIMEOUT" in messages[0].msg
    with (
        modify_settings(INSTALLED_APPS={"append": "django_thread"}),
        override_settings(TASKS=tasks),
    ):
        ids = [m.id for m in run_checks(tags=["django_thread"])]
    assert ids.count("django_thread.E002") == 2
