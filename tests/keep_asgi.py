"""A tiny ASGI Django project for tests/test_keep.py, served by uvicorn.

    KEEP_ASGI_DB='<DATABASES["default"] as JSON>' uvicorn tests.keep_asgi:application

Its one view answers with the server-side id of the session it queried on.
"""

from __future__ import annotations

import json
import os

import django
from django.conf import settings

settings.configure(
    DATABASES={"default": json.loads(os.environ["KEEP_ASGI_DB"])},
    INSTALLED_APPS=[],  # the ENGINE alone gives a request thread's connection back
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["127.0.0.1"],
    SECRET_KEY="django-thread-tests",
    USE_TZ=True,
)
django.setup()

from django.core.asgi import get_asgi_application  # noqa: E402
from django.db import connection  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402


def session(request: HttpRequest) -> HttpResponse:
    # A sync view: Django runs it in a new thread per request under ASGI.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_backend_pid()"
            if connection.vendor == "postgresql"
            else "SELECT CONNECTION_ID()"
        )
        return HttpResponse(str(cursor.fetchone()[0]))


urlpatterns = [path("", session)]
application = get_asgi_application()
