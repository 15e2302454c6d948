"""Testing threaded code inside TestCase (included in docs/howto/testing.md)."""

from collections.abc import Iterator

import pytest
from django.test import TestCase

from cookbook.models import Book
from django_thread import ThreadPoolExecutor
from django_thread.testing import share_connections


def restock(titles: list[str]) -> int:
    """The code under test: marks books in stock, one task per title."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return sum(pool.map(lambda t: Book.objects.filter(title=t).update(in_stock=True), titles))


@share_connections()
class RestockTests(TestCase):
    def test_workers_see_and_change_the_tests_rows(self) -> None:
        Book.objects.create(title="Dune", author="Herbert", in_stock=False)
        Book.objects.create(title="Emma", author="Austen", in_stock=False)

        self.assertEqual(restock(["Dune", "Emma"]), 2)

        self.assertEqual(Book.objects.filter(in_stock=True).count(), 2)

    def test_the_workers_queries_count(self) -> None:
        with self.assertNumQueries(3):  # one UPDATE per task, from the workers
            restock(["a", "b", "c"])


# With pytest-django: a fixture that shares the test's connections.
@pytest.fixture
def shared_db(db: None) -> Iterator[None]:
    with share_connections():
        yield


def test_restock_with_pytest(shared_db: None) -> None:
    Book.objects.create(title="Dune", author="Herbert", in_stock=False)
    assert restock(["Dune"]) == 1
    assert Book.objects.get(title="Dune").in_stock
