from django.http import HttpRequest, HttpResponse

from django_thread import unit_of_work
from tests.testapp.models import Note


@unit_of_work
def describe(note: Note) -> str:
    """A helper that is a unit of work of its own when a thread calls it."""
    return f"{note.text} ({Note.objects.filter(text=note.text).count()})"


def notes(request: HttpRequest) -> HttpResponse:
    # Iterating with a cursor open while the helper runs: a unit that closed the
    # request's connection here would break the iteration.
    lines = [describe(note) for note in Note.objects.order_by("pk").iterator(chunk_size=2)]
    return HttpResponse("\n".join(lines))
