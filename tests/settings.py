"""Settings for django-thread's own tests.

The database comes from the environment, so one test suite runs on all three:

    DJANGO_THREAD_TEST_DB=sqlite       a file database (the default)
    DJANGO_THREAD_TEST_DB=sqlite-memory  Django's in-memory test database (testing tests)
    DJANGO_THREAD_TEST_DB=postgresql   psycopg 3, 127.0.0.1:5432, user postgres
    DJANGO_THREAD_TEST_DB=mariadb      mysqlclient, 127.0.0.1:3306, user root

Host, port, user and password can be changed with DJANGO_THREAD_TEST_HOST, _PORT,
_USER and _PASSWORD; DJANGO_THREAD_TEST_PREFIX prefixes every database name, so that two
runs on one server (two checkouts, two helpers) do not share test databases.
SQLite is file-based on purpose: Django ignores close() on an
in-memory SQLite database, so closing could not be observed there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENDOR = os.environ.get("DJANGO_THREAD_TEST_DB", "sqlite")

SECRET_KEY = "django-thread-tests"
USE_TZ = True
INSTALLED_APPS = ["tests.testapp"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


PREFIX = os.environ.get("DJANGO_THREAD_TEST_PREFIX", "")


def database(name: str, vendor: str = VENDOR) -> dict[str, Any]:
    """The settings for database *name* on *vendor* (the benchmarks use it too)."""
    name = PREFIX + name
    if vendor == "sqlite":
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(HERE / f"{name}.sqlite3"),
            "TEST": {"NAME": str(HERE / f"test_{name}.sqlite3")},
            # A writer waits up to 5 s by default: on a loaded 2-core CI machine eight
            # workers writing at once have waited longer ("database is locked").
            "OPTIONS": {"timeout": 30},
        }
    if vendor == "sqlite-memory":  # Django's default test database: in memory, shared cache
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(HERE / f"{name}.sqlite3")}
    if vendor == "postgresql":
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "HOST": os.environ.get("DJANGO_THREAD_TEST_HOST", "127.0.0.1"),
            "PORT": os.environ.get("DJANGO_THREAD_TEST_PORT", "5432"),
            "USER": os.environ.get("DJANGO_THREAD_TEST_USER", "postgres"),
            "PASSWORD": os.environ.get("DJANGO_THREAD_TEST_PASSWORD", ""),
        }
    if vendor == "mariadb":
        return {
            "ENGINE": "django.db.backends.mysql",
            "NAME": name,
            "HOST": os.environ.get("DJANGO_THREAD_TEST_HOST", "127.0.0.1"),
            "PORT": os.environ.get("DJANGO_THREAD_TEST_PORT", "3306"),
            "USER": os.environ.get("DJANGO_THREAD_TEST_USER", "root"),
            "PASSWORD": os.environ.get("DJANGO_THREAD_TEST_PASSWORD", ""),
            "OPTIONS": {"charset": "utf8mb4"},
            "TEST": {"CHARSET": "utf8mb4"},
        }
    msg = (
        "DJANGO_THREAD_TEST_DB must be sqlite, sqlite-memory, postgresql or mariadb, "
        f"not {vendor!r}"
    )
    raise ValueError(msg)


# Django's defaults; tests change CONN_MAX_AGE / CONN_HEALTH_CHECKS / OPTIONS per
# test through the conn_settings fixture in conftest.py.
DATABASES = {"default": database("test"), "other": database("test_other")}
