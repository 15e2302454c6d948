"""Load: many workers, many tasks; no deadlock, connections bounded by the workers."""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

import pytest

from django_thread import ThreadPoolExecutor
from tests.conftest import settle
from tests.server import ServerProbe, probe_for
from tests.work import query

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

WORKERS = 32
TASKS = 10_000


class PeakSampler(threading.Thread):
    """Samples the server's connection count from its own probe until stopped."""

    def __init__(self) -> None:
        super().__init__(name="peak-sampler")
        self.peak = 0
        self.samples = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        probe = probe_for("default")
        try:
            while not self.stopping.wait(0.005):
                self.peak = max(self.peak, probe.count())
                self.samples += 1
        finally:
            probe.close()


@pytest.mark.parametrize("max_age", [None, 0])
def test_32_workers_through_10000_tasks(
    conn_settings: Any, probe: ServerProbe, max_age: int | None
) -> None:
    conn_settings(max_age=max_age, health_checks=True)
    tasks = TASKS if max_age is None else TASKS // 5  # a connection per task is slow
    baseline = probe.steady()
    sampler = PeakSampler()
    sampler.start()
    try:
        with ThreadPoolExecutor(WORKERS) as pool:
            futures = [pool.submit(query) for _ in range(tasks)]
            done, not_done = concurrent.futures.wait(futures, timeout=300)
            assert not not_done, f"{len(not_done)} tasks still pending: deadlock?"
            assert [f.exception() for f in done if f.exception()] == []
    finally:
        sampler.stopping.set()
        sampler.join()

    print(
        f"\n{tasks} tasks, CONN_MAX_AGE={max_age}: peak {sampler.peak - baseline} "
        f"connections over {sampler.samples} samples"
    )
    assert sampler.samples > 0
    if max_age is None:
        assert 1 <= sampler.peak - baseline <= WORKERS
    else:
        # A connection per task: a server lists a closed session until its backend
        # has exited, so the count can briefly exceed the workers; only check use.
        assert sampler.peak > baseline
    assert settle(probe, baseline) == baseline
