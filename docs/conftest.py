"""Run every Python example in the docs (Sybil), against a real database.

python3 -m nox -s docs_tests            # SQLite, PostgreSQL and MariaDB
DJANGO_THREAD_TEST_DB=postgresql pytest docs -p no:doctest --ds=cookbook.settings
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from doctest import ELLIPSIS, NORMALIZE_WHITESPACE
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connections
from django.test.utils import setup_databases, teardown_databases
from sybil import Sybil
from sybil.parsers.myst import ClearNamespaceParser, PythonCodeBlockParser, SkipParser


@pytest.fixture(scope="session")
def django_db_setup(django_test_environment: None, django_db_blocker: Any) -> Iterator[None]:
    """Create the test databases for every alias.

    pytest-django creates them only for tests marked ``django_db``; the docs' examples
    carry no marks (their pages get ``docs_db`` below instead).
    """
    with django_db_blocker.unblock():
        config = setup_databases(verbosity=0, interactive=False, aliases=set(connections))
    yield
    with django_db_blocker.unblock():
        teardown_databases(config, verbosity=0)


def _flush() -> None:
    for alias in connections:
        call_command("flush", database=alias, interactive=False, verbosity=0)


@pytest.fixture(scope="module")
def docs_db(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """One page, one database session: committed data (threads see it), empty tables.

    Like TransactionTestCase: every example on a page sees what the page's earlier
    examples committed, and the next page starts from empty tables.
    """
    with django_db_blocker.unblock():
        _flush()
        yield
        connections.close_all()
        _flush()
        connections.close_all()
        # Pages show plain threads leaving connections behind on purpose; those close
        # only when the cyclic collector frees them. Free them now, so that the next
        # page's server-side counts start from nothing, as they would in a new shell.
        gc.collect()


pytest_collect_file = Sybil(
    parsers=[
        PythonCodeBlockParser(doctest_optionflags=ELLIPSIS | NORMALIZE_WHITESPACE),
        SkipParser(),
        ClearNamespaceParser(),
    ],
    patterns=["*.md"],
    fixtures=["docs_db"],
).pytest()
