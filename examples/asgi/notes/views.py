from django.db import DatabaseError
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
