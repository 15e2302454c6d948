"""How to test code that runs ORM work in threads (included in docs/howto/testing.md)."""

import pytest
from django.test import TransactionTestCase

from cookbook.models import Book
from django_thread import ThreadPoolExecutor


def titles_in_stock() -> list[str]:
    return sorted(Book.objects.filter(in_stock=True).values_list("title", flat=True))


@pytest.mark.django_db(transaction=True)
def test_workers_see_committed_rows() -> None:
    Book.objects.create(title="Dune", author="Herbert")
    with ThreadPoolExecutor(max_workers=2) as pool:
        assert pool.submit(titles_in_stock).result(timeout=10) == ["Dune"]


class WorkerTests(TransactionTestCase):
    databases = {"default"}

    def test_workers_see_committed_rows(self) -> None:
        Book.objects.create(title="Emma", author="Austen")
        with ThreadPoolExecutor(max_workers=2) as pool:
            self.assertEqual(pool.submit(titles_in_stock).result(timeout=10), ["Emma"])
