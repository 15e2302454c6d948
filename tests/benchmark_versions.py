"""The benchmark's published rows for two checkouts of django-thread, in one run.

    python -m tests.benchmark_versions /tmp/before          # this checkout against that one
    python -m tests.benchmark_versions /tmp/before --iterations 6 --rounds 3

(``git worktree add --detach /tmp/before 983808c`` makes such a checkout.) One process
cannot import two versions of the package, so each iteration runs one process per
checkout, the order alternating (after before, before after, ...); each process runs
tests/benchmark.py's rows of *its* checkout, ours against the stdlib, as the benchmark
does. Reported per row: each version's ratio to the stdlib, and after / before, the
ratio of the two ratios round by round, each a median with its 95% interval.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The persistent-connection rows, which the per-task boundary affects most.
ORM_SETTINGS = (
    "CONN_MAX_AGE=None",
    "CONN_MAX_AGE=None, checks",
    "CONN_MAX_AGE=60",
    "CONN_MAX_AGE=None, checks, window 0.5 s",
)


def child(rounds: int, databases: list[str], out: Path) -> None:
    """In one checkout: its benchmark's rows, ours and the stdlib's time per round."""
    from tests import benchmark as b  # noqa: PLC0415 - the checkout's own

    vendors = b.configure(databases)
    from django.db import connections  # noqa: PLC0415

    import django_thread  # noqa: PLC0415

    executors: dict[str, Any] = {
        "ours": django_thread.ThreadPoolExecutor,
        "stdlib": concurrent.futures.ThreadPoolExecutor,
    }
    threads: dict[str, Any] = {"ours": django_thread.Thread, "stdlib": threading.Thread}
    noops, starts, queries = 20_000, 1_000, 2_000
    rows = [
        b.alternate(
            b.Measurement("no-op tasks", "none", "", noops),
            rounds,
            lambda side: b.noop_tasks(executors[side], noops),
            None,
        ),
        b.alternate(
            b.Measurement("short threads", "none", "", starts),
            rounds,
            lambda side: b.short_threads(threads[side], starts),
            None,
        ),
    ]
    for vendor in vendors:
        if vendor == "sqlite":
            continue  # as in the benchmark: the ORM rows are about servers
        for setting in b.SETTINGS:
            if setting.label not in ORM_SETTINGS or (setting.pool and vendor != "postgresql"):
                continue
            with b.connection_setting(vendor, setting):
                close_pool = getattr(connections[vendor], "close_pool", b._nothing)
                rows.append(
                    b.alternate(
                        b.Measurement("ORM tasks", vendor, setting.label, queries),
                        rounds,
                        functools.partial(b._orm_side, executors, queries, vendor, setting),
                        vendor,
                        after_run=close_pool if setting.pool else b._nothing,
                    )
                )
    document = {
        "package": django_thread.__file__,
        "rows": {f"{m.benchmark} | {m.database} | {m.setting or '-'}": m.ratios for m in rows},
    }
    out.write_text(json.dumps(document))


def run_checkout(checkout: Path, rounds: int, databases: str, out: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}  # its package and its tests first
    command = [sys.executable, __file__, "--child", str(rounds), databases, str(out)]
    subprocess.run(command, cwd=checkout, env=env, check=True)
    result: dict[str, Any] = json.loads(out.read_text())
    print(f"ran {result['package']}", file=sys.stderr, flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="the other checkout")
    parser.add_argument("--after", type=Path, default=ROOT)
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3, help="per process and row")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--json", type=Path, default=ROOT / ".bench" / "versions.json")
    args = parser.parse_args(argv)

    from tests.benchmark import Measurement  # noqa: PLC0415 - its 95% interval

    runs: dict[str, list[dict[str, list[float]]]] = {"after": [], "before": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.iterations):
            for side in ("after", "before") if i % 2 == 0 else ("before", "after"):
                checkout = args.after if side == "after" else args.before
                out = Path(tmp) / f"{side}-{i}.json"
                run = run_checkout(checkout.resolve(), args.rounds, args.databases, out)
                runs[side].append(run["rows"])
    lines, document = [], {}
    for row in runs["after"][0]:
        after = [r for run in runs["after"] for r in run[row]]
        before = [r for run in runs["before"] for r in run[row]]
        ones = [1.0] * len(after)
        cells = {
            "after": Measurement("", "", "", 0, after, ones),
            "before": Measurement("", "", "", 0, before, ones),
            "after / before": Measurement("", "", "", 0, after, before),
        }
        document[row] = {k: [m.ratio, *m.interval, len(m.ratios)] for k, m in cells.items()}
        text = "; ".join(
            "{} {:.3f}x ({:.3f}-{:.3f})".format(k, m.ratio, *m.interval) for k, m in cells.items()
        )
        lines.append(f"{row}: {text}; {len(after)} rounds")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        # Run as a file from the other checkout: that checkout comes first on the path.
        sys.path.remove(str(Path(__file__).resolve().parent))
        child(int(sys.argv[2]), sys.argv[3].split(","), Path(sys.argv[4]))
    else:
        sys.exit(main())
