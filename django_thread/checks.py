"""System checks for connection settings that hurt threaded work.

They run with ``manage.py check`` (and before ``runserver``, ``migrate`` and the test
runner) when ``"django_thread"`` is in ``INSTALLED_APPS``, and are silenced the usual
way::

    SILENCED_SYSTEM_CHECKS = ["django_thread.W001"]  # e.g. behind PgBouncer

Only server databases are checked: SQLite opens a file, so connecting per unit costs
little, and its health check cannot fail (``is_usable()`` is always True).
"""

from __future__ import annotations

from typing import Any

import django
from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from django_thread._connections import CHECKS_URL, settings_problems

TAG = "django_thread"


@register(TAG)
def check_database_settings(**kwargs: Any) -> list[CheckMessage]:
    """The checks, while the app is installed (a registration outlives the app)."""
    if not apps.is_installed("django_thread"):
        return []
    options = getattr(settings, "DJANGO_THREAD", None)
    return (
        settings_messages({} if options is None else options)
        + database_messages(settings.DATABASES)
        + tasks_messages(getattr(settings, "TASKS", {}))
    )


def settings_messages(options: object) -> list[CheckMessage]:
    """E001: the ``DJANGO_THREAD`` setting itself (its type, its keys, its values)."""
    problems = settings_problems(options)
    if not problems:
        return []
    return [
        Error(
            " ".join(problems),
            hint=f"See {CHECKS_URL}#django-thread-e001",
            obj="DJANGO_THREAD",
            id="django_thread.E001",
        )
    ]


#: The first Django whose native pool takes a ``check`` from ``OPTIONS["pool"]``: before,
#: Django passes ``check=`` to psycopg_pool itself and a second one is a TypeError.
POOL_CHECK_DJANGO = (6, 1)


def database_messages(databases: dict[str, dict[str, Any]]) -> list[CheckMessage]:
    """W001, W002 and E002, once per database alias that needs them."""
    messages: list[CheckMessage] = []
    for alias, db in databases.items():
        engine = str(db.get("ENGINE", ""))
        if not engine or engine.endswith(("sqlite3", "dummy")):
            continue
        max_age = db.get("CONN_MAX_AGE", 0)
        pool = (db.get("OPTIONS") or {}).get("pool")
        pooled = bool(pool)
        if isinstance(pool, dict) and "check" in pool and django.VERSION < POOL_CHECK_DJANGO:
            messages.append(pool_check_error(alias))
        if max_age == 0 and not pooled:
            messages.append(
                Warning(
                    f"Database {alias!r} has CONN_MAX_AGE = 0 and no connection pool: "
                    "every unit of work in a thread opens and closes a connection.",
                    hint=(
                        "Set CONN_MAX_AGE = None with CONN_HEALTH_CHECKS = True, or, on "
                        "PostgreSQL, Django's native pool (OPTIONS['pool']). Behind "
                        "PgBouncer in transaction mode, 0 is right: silence this check. "
                        f"See {CHECKS_URL}#django-thread-w001"
                    ),
                    obj=f"DATABASES[{alias!r}]",
                    id="django_thread.W001",
                )
            )
        elif max_age != 0 and not db.get("CONN_HEALTH_CHECKS", False):
            messages.append(
                Warning(
                    f"Database {alias!r} keeps connections open (CONN_MAX_AGE = "
                    f"{max_age!r}) without CONN_HEALTH_CHECKS: a connection the server "
                    "dropped while a thread was idle fails that thread's next unit.",
                    hint=(
                        "Set CONN_HEALTH_CHECKS = True: one ping per unit of work, only "
                        "for a connection carried over from the previous one. "
                        f"See {CHECKS_URL}#django-thread-w002"
                    ),
                    obj=f"DATABASES[{alias!r}]",
                    id="django_thread.W002",
                )
            )
    return messages


def tasks_messages(tasks: object) -> list[CheckMessage]:
    """E003: the ``OPTIONS`` of each ``django_thread.tasks`` backend in ``TASKS``.

    Django reports its own ``TASKS`` problems only when a backend is first used.
    """
    if django.VERSION < (6, 0) or not isinstance(tasks, dict):
        return []
    from django_thread.tasks import ThreadPoolBackend, validate_options  # noqa: PLC0415

    messages: list[CheckMessage] = []
    for alias, params in tasks.items():
        if not isinstance(params, dict):
            continue
        try:
            backend = import_string(str(params.get("BACKEND", "")))
        except ImportError:
            continue  # not ours to report
        if not (isinstance(backend, type) and issubclass(backend, ThreadPoolBackend)):
            continue
        try:
            validate_options(alias, params.get("OPTIONS", {}))
        except ImproperlyConfigured as exc:
            messages.append(
                Error(
                    str(exc),
                    hint=f"See {CHECKS_URL}#django-thread-e003",
                    obj=f"TASKS[{alias!r}]",
                    id="django_thread.E003",
                )
            )
    return messages


def pool_check_error(alias: str) -> Error:
    """E002: a pool ``check`` of the user's, which Django before 6.1 refuses."""
    version = ".".join(map(str, django.VERSION[:2]))
    return Error(
        f"Database {alias!r} sets OPTIONS['pool']['check'], which Django {version} "
        "refuses: it passes psycopg_pool a check of its own (chosen by "
        'CONN_HEALTH_CHECKS), so opening a connection fails with "TypeError: '
        "ConnectionPool() got multiple values for keyword argument 'check'\".",
        hint=(
            "Remove the 'check' key and set CONN_HEALTH_CHECKS = True for Django's "
            "check of every connection the pool hands out; "
            "django_thread.check_pooled_connection, which skips it within "
            "HEALTH_CHECK_WINDOW, needs Django 6.1 or newer. "
            f"See {CHECKS_URL}#django-thread-e002"
        ),
        obj=f"DATABASES[{alias!r}]",
        id="django_thread.E002",
    )
