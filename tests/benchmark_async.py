"""django_thread.sync_to_async against asgiref's, as a ratio measured in the same run.

    python -m tests.benchmark_async            # 10,000 awaits per round, 5 rounds
    python -m tests.benchmark_async --rounds 21   # a steadier median
    python -m tests.benchmark_async --quick    # checks that it runs
    valgrind --tool=callgrind python -m tests.benchmark_async --only ours --calls 2000
                                               # one bridge, one round: instructions

Each await runs one ORM count on an SQLite file with persistent connections
(CONN_MAX_AGE=None, CONN_HEALTH_CHECKS=True); rounds alternate ours and asgiref's,
thread_sensitive=False on the same kind of single-thread pool; the median of the
per-round ratios ours / asgiref's (below 1.05 is the target) is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor as StdlibPool
from pathlib import Path
from typing import Any

import django
from django.conf import settings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    # Instruction counts (callgrind) do not depend on the machine's load: one bridge's
    # round at two sizes, the difference divided by the extra calls, is its cost a call.
    parser.add_argument("--only", choices=["ours", "asgiref"])
    parser.add_argument("--calls", type=int)
    parser.add_argument("--rounds", type=int)
    args = parser.parse_args()
    calls, rounds = (200, 1) if args.quick else (10_000, 5)
    calls, rounds = args.calls or calls, args.rounds or rounds
    db = Path(tempfile.mkdtemp()) / "bench.sqlite3"
    settings.configure(
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(db),
                "CONN_MAX_AGE": None,
                "CONN_HEALTH_CHECKS": True,
            }
        },
        INSTALLED_APPS=["django_thread", "tests.testapp"],
        USE_TZ=True,
    )
    django.setup()
    from asgiref.sync import sync_to_async as asgiref_sync_to_async  # noqa: PLC0415
    from django.core.management import call_command  # noqa: PLC0415

    from django_thread import sync_to_async  # noqa: PLC0415
    from tests.testapp.models import Note  # noqa: PLC0415

    call_command("migrate", run_syncdb=True, verbosity=0)

    def timed(bridge: Any) -> float:
        pool = StdlibPool(1)
        call = bridge(Note.objects.count, thread_sensitive=False, executor=pool)

        async def run() -> float:
            start = time.perf_counter()
            for _ in range(calls):
                await call()
            return time.perf_counter() - start

        try:
            return asyncio.run(run())
        finally:
            pool.shutdown()

    if args.only:
        bridge = sync_to_async if args.only == "ours" else asgiref_sync_to_async
        print(f"{args.only}: {calls} calls in {timed(bridge):.3f}s")
        return
    ratios = []
    for _ in range(rounds):
        theirs = timed(asgiref_sync_to_async)
        ours = timed(sync_to_async)
        ratios.append(ours / theirs)
        print(f"asgiref {theirs:.3f}s  ours {ours:.3f}s  ratio {ours / theirs:.3f}")
    print(
        f"median ratio ours/asgiref over {rounds} rounds of {calls}: "
        f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})"
    )


if __name__ == "__main__":
    main()
