import os

from asgiref.sync import sync_to_async
from django.db import DatabaseError, connection
from django.http import Http404, JsonResponse

from notes.bridges import BRIDGES
from notes.models import Note


async def count(request, bridge):
    """Count the notes off the event loop, in a thread of the bridge's executor.

    ``thread_sensitive=False``: asgiref runs the call on asyncio's default executor,
    whose threads live as long as the process and keep their connections, untidied;
    django_thread runs it on its own pool, as a unit of work.
    """
    if bridge not in ("asgiref", "django_thread"):
        raise Http404(bridge)
    try:
        notes = await BRIDGES[bridge](Note.objects.count, thread_sensitive=False)()
    except DatabaseError as exc:
        return JsonResponse({"error": str(exc)}, status=503)
    return JsonResponse({"count": notes})


SESSION_SQL = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}


def server_session():
    """The server-side id of this thread's session (SQLite has none: None)."""
    if connection.vendor not in SESSION_SQL:
        return None
    with connection.cursor() as cursor:
        cursor.execute(SESSION_SQL[connection.vendor])
        return cursor.fetchone()[0]


def session(request):
    """A sync view: under ASGI, Django runs it in a new thread for each request."""
    return JsonResponse(
        {"pid": os.getpid(), "count": Note.objects.count(), "session": server_session()}
    )


async def asession(request):
    """An async view that awaits the ORM: the query runs in a thread made for the request."""
    notes = await Note.objects.acount()
    # Same request, same thread (thread_sensitive), so the same connection.
    return JsonResponse(
        {"pid": os.getpid(), "count": notes, "session": await sync_to_async(server_session)()}
    )
