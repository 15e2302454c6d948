"""A tiny ASGI Django project served by real servers in tests/test_keep.py and
tests/benchmark_asgi.py.

    KEEP_ASGI_DB='<DATABASES["default"] as JSON>' uvicorn tests.keep_asgi:application

Each view answers with the server-side id of the session it queried on; ``/sync/`` and
``/async/`` prefix it with the worker's process id, and read it through the ORM (a sync
view, and an async view that awaits the ORM), from the one row of testapp's Note table.
"""

from __future__ import annotations

import json
import os

import django
from django.conf import settings

DATABASE = json.loads(os.environ["KEEP_ASGI_DB"])
settings.configure(
    DATABASES={"default": DATABASE},
    # The ENGINE alone gives a request thread's connection back: no django_thread app.
    INSTALLED_APPS=["tests.testapp"],
    DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["127.0.0.1"],
    SECRET_KEY="django-thread-tests",
    USE_TZ=True,
)
django.setup()

from django.core.asgi import get_asgi_application  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models.expressions import RawSQL  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

from tests.testapp.models import Note  # noqa: E402

SESSION_SQL = {"postgresql": "pg_backend_pid()", "mysql": "CONNECTION_ID()"}
PID = os.getpid()


def session(request: HttpRequest) -> HttpResponse:
    # A sync view: Django runs it in a new thread per request under ASGI.
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {SESSION_SQL[connection.vendor]}")
        return HttpResponse(str(cursor.fetchone()[0]))


def _session_query() -> object:
    sql = RawSQL(SESSION_SQL[connection.vendor], ())
    return Note.objects.values_list(sql, flat=True)


def sync_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"{PID} {_session_query().first()}")  # type: ignore[attr-defined]


async def async_view(request: HttpRequest) -> HttpResponse:
    # The ORM's async API runs the query in the request's thread, as a sync view does.
    return HttpResponse(f"{PID} {await _session_query().afirst()}")  # type: ignore[attr-defined]


def ready(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(PID))  # no database: which worker is up


urlpatterns = [
    path("", session),
    path("sync/", sync_view),
    path("async/", async_view),
    path("ready/", ready),
]
application = get_asgi_application()
