"""A view that runs its independent queries in parallel."""

from django.db.models import Sum
from django.http import HttpRequest, JsonResponse

from cookbook.models import Book, Sale
from django_thread import ThreadPoolExecutor

# One pool for the whole process: its workers, and their connections, are reused.
POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="dashboard")


def count_books() -> int:
    return Book.objects.count()


def count_in_stock() -> int:
    return Book.objects.filter(in_stock=True).count()


def copies_sold() -> int:
    return Sale.objects.aggregate(total=Sum("quantity"))["total"] or 0


def dashboard(request: HttpRequest) -> JsonResponse:
    futures = {
        "books": POOL.submit(count_books),
        "in_stock": POOL.submit(count_in_stock),
        "copies_sold": POOL.submit(copies_sold),
    }
    return JsonResponse({name: future.result(timeout=10) for name, future in futures.items()})
