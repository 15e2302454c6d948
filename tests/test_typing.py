"""Static types of the public API; mypy checks the assert_type() calls in CI."""

from __future__ import annotations

from concurrent.futures import Future
from typing import assert_type

import django_thread


def add(a: int, b: int) -> int:
    return a + b


def test_submit_returns_a_typed_future() -> None:
    with django_thread.ThreadPoolExecutor(1) as pool:
        future = pool.submit(add, 1, b=2)
        assert_type(future, Future[int])
        assert future.result() == 3
        results = pool.map(add, [1, 2], [10, 20])
        assert list(results) == [11, 22]


def test_unit_of_work_keeps_the_decorated_signature() -> None:
    @django_thread.unit_of_work()
    def double(x: int) -> int:
        return 2 * x

    assert_type(double(2), int)
    assert double(2) == 4
