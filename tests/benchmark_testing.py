"""Benchmark: a suite of tests that use a pool, as TestCase + share_connections()
against the same tests as TransactionTestCase, in one run.

    DJANGO_THREAD_TEST_DB=postgresql python -m tests.benchmark_testing [--tests 50] [--rounds 5]

Each test writes rows in the test thread, then a pool of 4 reads and writes more.
TransactionTestCase commits them and empties every table after each test; TestCase
rolls its transaction back. Our schema is two tables: on a real project's schema the
flush costs more, so the ratio here is the least the difference can be.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import unittest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")


def make_cases(tests: int) -> tuple[type[unittest.TestCase], type[unittest.TestCase]]:
    from django.test import TestCase, TransactionTestCase  # noqa: PLC0415

    from django_thread import ThreadPoolExecutor  # noqa: PLC0415
    from django_thread.testing import share_connections  # noqa: PLC0415
    from tests.testapp.models import Note  # noqa: PLC0415

    def body(self: unittest.TestCase) -> None:
        Note.objects.bulk_create(Note(text=f"t{i}") for i in range(10))
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: Note.objects.create(text=f"w{i}"), range(10)))
            counts = list(pool.map(lambda _: Note.objects.count(), range(10)))
        assert counts == [20] * 10, counts

    methods = {f"test_{i:03}": body for i in range(tests)}
    shared = share_connections()(type("Shared", (TestCase,), dict(methods)))
    committed = type("Committed", (TransactionTestCase,), dict(methods))
    return shared, committed


def run_case(case: type[unittest.TestCase]) -> float:
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(case)
    result = unittest.TestResult()
    started = time.perf_counter()
    suite.run(result)
    elapsed = time.perf_counter() - started
    if not result.wasSuccessful():
        problems = [text for _, text in result.failures + result.errors]
        raise AssertionError("\n".join(problems[:3]))
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    import django  # noqa: PLC0415
    from django.conf import settings  # noqa: PLC0415
    from django.db import connection  # noqa: PLC0415
    from django.test.utils import setup_databases, teardown_databases  # noqa: PLC0415

    django.setup()
    config = setup_databases(verbosity=0, interactive=False, aliases={"default": None})
    try:
        shared, committed = make_cases(args.tests)
        ratios = []
        for _ in range(args.rounds):
            a, b = run_case(shared), run_case(committed)
            ratios.append(b / a)
            print(f"TestCase + share_connections() {a:.3f} s, TransactionTestCase {b:.3f} s")
    finally:
        teardown_databases(config, verbosity=0)
    vendor = connection.vendor
    print(
        f"{args.tests} tests with a pool on {vendor} ({settings.DATABASES['default']['ENGINE']}): "
        f"TransactionTestCase / TestCase + share_connections() = "
        f"{statistics.median(ratios):.2f}x (median of {args.rounds}; "
        f"{min(ratios):.2f}-{max(ratios):.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
