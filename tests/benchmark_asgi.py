"""Requests per second and server sessions under real ASGI servers, per connection setting.

    python -m tests.benchmark_asgi                # uvicorn 1 worker, 3 rounds of 1,000
    python -m tests.benchmark_asgi --quick        # under a minute: checks that it runs
    python -m tests.benchmark_asgi --servers uvicorn:4,daphne:1,daphne:4 --rounds 1
    python -m tests.benchmark_asgi --publish      # then write docs/benchmarks/asgi.*

tests/keep_asgi.py is served by uvicorn or daphne in a subprocess on a free port, one
server per contender and round, and httpx sends it requests one after another and 16 at
a time, to a sync view and to an async view that awaits the ORM. Each view answers with its
worker's pid and the server-side id of the session it queried on, so the sessions that
served requests are counted per worker; on PostgreSQL pg_stat_database's ``sessions``
counts every session the server opened. After the server stops, the sessions still
connected to the database are counted. Contenders alternate within each round (the first
one changes every round); medians over rounds are reported. Then, with the server
dropping sessions idle for 1 s, bursts 1.5 s apart show what the idle timeout costs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 16
IDLE_TIMEOUT = 1.0  # seconds; the bursts are further apart than this
BURST_GAP = 1.5
VIEWS = {"sync": "/sync/", "async": "/async/"}
MODES = {"sequential": 1, "concurrent": CONCURRENCY}


def contenders(vendor: str, keeps: tuple[int, ...] = (CONCURRENCY,)) -> dict[str, dict[str, Any]]:
    """Each contender's DATABASES["default"] changes, for *vendor*.

    Ours keeps as many idle connections as requests run at once, unless *keeps* says
    otherwise (then one contender per value). (A kept connection's reset as it is taken
    is its health check: HEALTH_CHECK_WINDOW changes nothing for ours here.)
    """
    plain = f"django.db.backends.{'mysql' if vendor == 'mariadb' else vendor}"
    ours = plain.replace("django.db.backends.", "django_thread.backends.")
    found: dict[str, dict[str, Any]] = {
        "CONN_MAX_AGE=0": {"ENGINE": plain, "CONN_MAX_AGE": 0},
    }
    if vendor == "postgresql":
        # Sized for the 16 requests at once: none waits for a connection.
        found["native pool"] = {
            "ENGINE": plain,
            "CONN_MAX_AGE": 0,
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": {"pool": {"min_size": 4, "max_size": CONCURRENCY}},
        }
    for keep in keeps:
        found["ours" if keep == CONCURRENCY else f"ours, keep {keep}"] = {
            "ENGINE": ours,
            "CONN_MAX_AGE": None,
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": {"keep": keep},
        }
    return found


def idle_timeout_options(vendor: str) -> dict[str, Any]:
    """OPTIONS that make the server drop a session idle for IDLE_TIMEOUT."""
    if vendor == "postgresql":
        return {"options": f"-c idle_session_timeout={int(IDLE_TIMEOUT * 1000)}"}
    return {"init_command": f"SET SESSION wait_timeout={round(IDLE_TIMEOUT)}"}


# --- the database ------------------------------------------------------------------------


def configure(vendors: list[str], name: str) -> list[str]:
    """Django in this process, one alias per vendor; the table the views read, one row."""
    import django  # noqa: PLC0415
    from django.conf import settings  # noqa: PLC0415

    from tests.settings import database  # noqa: PLC0415

    settings.configure(
        DATABASES={"default": {}, **{v: database(name, v) for v in vendors}},
        INSTALLED_APPS=["tests.testapp"],
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        USE_TZ=True,
    )
    django.setup()
    from tests.benchmark import prepare  # noqa: PLC0415

    reachable = []
    for vendor in vendors:
        reason = prepare(vendor, database(name, vendor)["NAME"], rows=1)
        if reason:
            print(f"skipping {vendor}: {reason}", file=sys.stderr)
            continue
        reachable.append(vendor)
        if vendor == "postgresql":
            _utc_by_default(vendor)
    return reachable


def _utc_by_default(alias: str) -> None:
    """The database's time zone is Django's, as Django's PostgreSQL notes advise.

    Otherwise Django sets it on every connect, and again on every hand-over of ours,
    whose reset (DISCARD ALL) puts the session's time zone back to this default.
    """
    from django.db import connections  # noqa: PLC0415

    conn = connections[alias]
    with conn.cursor() as cursor:
        name = conn.ops.quote_name(conn.settings_dict["NAME"])
        cursor.execute(f"ALTER DATABASE {name} SET timezone TO 'UTC'")
    conn.close()


def opened_sessions(alias: str) -> int | None:
    """PostgreSQL's count of sessions ever opened on the database; None elsewhere."""
    from django.db import connections  # noqa: PLC0415

    from tests.server import probe_for  # noqa: PLC0415

    probe = probe_for(alias)
    try:
        if probe.vendor != "postgresql":
            return None
        conn: Any = probe.conn  # type: ignore[attr-defined]
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = %s",
            (connections[alias].settings_dict["NAME"],),
        ).fetchone()
        return int(row[0])
    finally:
        probe.close()


def left_connected(alias: str) -> int:
    """Sessions still connected to the database once the server has gone (10 s grace)."""
    from tests.server import probe_for  # noqa: PLC0415

    probe = probe_for(alias)
    try:
        return probe.drained(10)
    finally:
        probe.close()


# --- the servers -------------------------------------------------------------------------


def _free_socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def serve(server: str, workers: int, db: dict[str, Any]) -> Iterator[str]:
    """*server* with *workers* processes serving tests/keep_asgi.py; its base URL.

    Daphne has no workers option: for more than one, as many daphne processes share
    one listening socket (``--fd``), which the kernel hands connections from, as
    uvicorn's workers share theirs.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KEEP_ASGI_DB": json.dumps(db)}
    app = "tests.keep_asgi:application"
    sock = _free_socket()
    port = sock.getsockname()[1]
    processes = []
    try:
        if server == "uvicorn":
            sock.close()
            args = ["--port", str(port), "--workers", str(workers), "--log-level", "warning"]
            # Its 5 s default can close a kept-alive connection as the client reuses it,
            # and kill a worker still starting on a loaded machine (and again, forever).
            args += ["--timeout-keep-alive", "60", "--timeout-worker-healthcheck", "120"]
            command = [sys.executable, "-m", "uvicorn", app, *args]
            processes.append(subprocess.Popen(command, env=env, cwd=ROOT))
        else:
            sock.listen(128)
            command = [sys.executable, "-m", "daphne", "--fd", str(sock.fileno()), "-v", "0"]
            processes.extend(
                subprocess.Popen([*command, app], env=env, cwd=ROOT, pass_fds=[sock.fileno()])
                for _ in range(workers)
            )
            sock.close()  # the children have it
        url = f"http://127.0.0.1:{port}"
        _wait_for(url, workers, processes)
        yield url
    finally:
        sock.close()
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for(url: str, workers: int, processes: list[subprocess.Popen[bytes]]) -> None:
    """Until every worker answers (or 180 s: a loaded machine); a view with no database."""
    import httpx  # noqa: PLC0415

    deadline = time.monotonic() + 180
    seen: set[str] = set()

    async def probe() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            answers = await asyncio.gather(
                *(client.get("/ready/") for _ in range(4 * workers)), return_exceptions=True
            )
        seen.update(a.text for a in answers if isinstance(a, httpx.Response))

    while len(seen) < workers and time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                msg = f"the server exited with {process.returncode}"
                raise RuntimeError(msg)
        asyncio.run(probe())
        if len(seen) < workers:
            time.sleep(0.2)
    if not seen:
        msg = "the server did not start"
        raise RuntimeError(msg)


# --- the client --------------------------------------------------------------------------


async def send(url: str, path: str, requests: int, at_once: int) -> dict[str, Any]:
    """*requests* GETs, *at_once* at a time; timing, failures, sessions per worker pid."""
    import httpx  # noqa: PLC0415

    answers: list[str] = []
    failures = 0
    gate = asyncio.Semaphore(at_once)
    limits = httpx.Limits(max_connections=at_once, max_keepalive_connections=at_once)

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal failures
        async with gate:
            try:
                response = await client.get(path)
            except httpx.HTTPError:
                failures += 1
                return
            if response.status_code == 200:
                answers.append(response.text)
            else:
                failures += 1

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        start = time.perf_counter()
        await asyncio.gather(*(one(client) for _ in range(requests)))
        elapsed = time.perf_counter() - start
    per_worker: dict[str, set[str]] = {}
    for answer in answers:
        pid, session = answer.split()
        per_worker.setdefault(pid, set()).add(session)
    return {
        "requests": requests,
        "seconds": elapsed,
        "rps": requests / elapsed,
        "failures": failures,
        "sessions": sum(len(s) for s in per_worker.values()),
        "max_sessions_per_worker": max((len(s) for s in per_worker.values()), default=0),
        "workers_seen": len(per_worker),
    }


def measure(
    vendor: str, setting: dict[str, Any], *, server: str, workers: int,
    cells: list[tuple[str, str]], requests: int,
) -> list[dict[str, Any]]:  # fmt: skip
    """One server for *cells* (view, mode), one after another: a result for each.

    "left" and "opened" are the server's: after it stopped, and while it ran.
    """
    from django.db import connections  # noqa: PLC0415

    db = {**connections[vendor].settings_dict, **setting}
    db = {k: v for k, v in db.items() if k != "TEST"}
    before = opened_sessions(vendor)
    with serve(server, workers, db) as url:
        results = [
            asyncio.run(send(url, VIEWS[view], requests, MODES[mode])) for view, mode in cells
        ]
    left = left_connected(vendor)
    after = opened_sessions(vendor)
    for result in results:
        result["left"] = left
        # PostgreSQL: every session opened while the server ran (a pool's idle ones too).
        result["opened"] = None if before is None or after is None else after - before
    return results


def bursts(
    vendor: str, setting: dict[str, Any], *, server: str, workers: int, view: str, count: int
) -> dict[str, Any]:
    """*count* bursts of CONCURRENCY requests, BURST_GAP apart, the server dropping
    sessions idle for IDLE_TIMEOUT; failures and sessions over all of them."""
    from django.db import connections  # noqa: PLC0415

    options = {**setting.get("OPTIONS", {}), **idle_timeout_options(vendor)}
    db = {**connections[vendor].settings_dict, **setting, "OPTIONS": options}
    db = {k: v for k, v in db.items() if k != "TEST"}
    failures, sessions = 0, 0
    with serve(server, workers, db) as url:
        for i in range(count):
            if i:
                time.sleep(BURST_GAP)
            result = asyncio.run(send(url, VIEWS[view], CONCURRENCY, CONCURRENCY))
            failures += result["failures"]
            sessions += result["sessions"]
    return {"failures": failures, "sessions": sessions, "left": left_connected(vendor)}


# --- the run -----------------------------------------------------------------------------


def servers(args: argparse.Namespace) -> list[tuple[str, int]]:
    return [(s.split(":")[0], int(s.split(":")[1])) for s in args.servers.split(",")]


def run_load(args: argparse.Namespace, vendors: list[str]) -> list[dict[str, Any]]:
    results = []
    keeps = tuple(int(keep) for keep in args.keeps.split(","))
    for vendor in vendors:
        settings_by_name = contenders(vendor, keeps)
        if args.settings:
            chosen = args.settings.split(";")
            settings_by_name = {k: v for k, v in settings_by_name.items() if k in chosen}
        for server, workers in servers(args):
            cells: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
            for round_ in range(args.rounds):
                names = list(settings_by_name)
                if round_ % 2:
                    names.reverse()  # A B C, C B A, ...: no contender always first
                wanted = [(v, m) for v in args.views.split(",") for m in args.modes.split(",")]
                for name in names:
                    found = measure(
                        vendor, settings_by_name[name], server=server, workers=workers,
                        cells=wanted, requests=args.requests,
                    )  # fmt: skip
                    for (view, mode), result in zip(wanted, found, strict=True):
                        cells.setdefault((name, view, mode), []).append(result)
                        print(
                            f"{vendor} {server}x{workers} {view} {mode} {name}: "
                            f"{result['rps']:.0f} rps, {result['sessions']} sessions, "
                            f"{result['failures']} failed, {result['left']} left",
                            file=sys.stderr,
                            flush=True,
                        )
            for (name, view, mode), rounds in cells.items():
                summary = _summary(
                    rounds, vendor=vendor, server=server, workers=workers, name=name,
                    view=view, mode=mode,
                )  # fmt: skip
                results.append(summary)
    return results


def run_bursts(args: argparse.Namespace, vendors: list[str]) -> list[dict[str, Any]]:
    idle = []
    for vendor in vendors:
        ours = contenders(vendor)["ours"]
        for server, workers in servers(args):
            for view in args.views.split(",") if args.bursts else ():
                result = bursts(
                    vendor, ours, server=server, workers=workers, view=view, count=args.bursts
                )
                idle.append(
                    {"database": vendor, "server": server, "workers": workers, "view": view,
                     "bursts": args.bursts, **result}
                )  # fmt: skip
                print(f"idle timeout {vendor} {server}x{workers} {view}: {result}", file=sys.stderr)
    return idle


def _summary(
    rounds: list[dict[str, Any]], *, vendor: str, server: str, workers: int, name: str,
    view: str, mode: str,
) -> dict[str, Any]:  # fmt: skip
    opened = [r["opened"] for r in rounds if r["opened"] is not None]
    return {
        "database": vendor,
        "server": server,
        "workers": workers,
        "setting": name,
        "view": view,
        "mode": mode,
        "concurrency": MODES[mode],
        "requests": rounds[0]["requests"],
        "rounds": len(rounds),
        "rps": statistics.median(r["rps"] for r in rounds),
        "rps_each": [round(r["rps"], 1) for r in rounds],
        "sessions": max(r["sessions"] for r in rounds),
        "max_sessions_per_worker": max(r["max_sessions_per_worker"] for r in rounds),
        "opened": max(opened) if opened else None,
        "failures": sum(r["failures"] for r in rounds),
        "left": max(r["left"] for r in rounds),
    }


def environment(vendors: list[str]) -> dict[str, Any]:
    from importlib.metadata import version  # noqa: PLC0415

    from tests.benchmark import environment as base  # noqa: PLC0415

    env = base(vendors)
    env["servers"] = f"uvicorn {version('uvicorn')}, daphne {version('daphne')}"
    env["load"] = os.getloadavg()[0]
    return env


# --- the docs' table and chart ----------------------------------------------------------


def markdown(document: dict[str, Any]) -> str:
    env = document["environment"]
    lines = [
        f"Measured {env['date']} on {env['machine']} shared with other jobs (load average "
        f"{env['load']:.1f} at the start); Python {env['python']}, Django {env['django']}, "
        f"{env['servers']}; "
        + ", ".join(f"{name}: {version}" for name, version in env["databases"].items())
        + ".",
        "",
        "| database | server | view | requests | setting | requests/s (median) "
        "| sessions (most per worker) | PostgreSQL sessions opened by the server "
        "| failed | left after stop |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in document["results"]:
        opened = "-" if r["opened"] is None else str(r["opened"])
        how = "one at a time" if r["concurrency"] == 1 else f"{r['concurrency']} at a time"
        lines.append(
            f"| {r['database']} | {r['server']} x{r['workers']} | {r['view']} "
            f"| {r['requests']:,} {how} | {r['setting']} | **{r['rps']:.0f}** "
            f"({r['rounds']} round{'s' if r['rounds'] > 1 else ''}) "
            f"| {r['sessions']} ({r['max_sessions_per_worker']}) "
            f"| {opened} | {r['failures']} | {r['left']} |"
        )
    if document["idle_timeout"]:
        lines += [
            "",
            f"**Idle timeout {IDLE_TIMEOUT:g} s, bursts of {CONCURRENCY} requests "
            f"{BURST_GAP:g} s apart** (ours):",
            "",
            "| database | server | view | bursts | sessions | failed | left after stop |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in document["idle_timeout"]:
            lines.append(
                f"| {r['database']} | {r['server']} x{r['workers']} | {r['view']} "
                f"| {r['bursts']} | {r['sessions']} | {r['failures']} | {r['left']} |"
            )
    return "\n".join(lines) + "\n"


def chart(document: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    results = document["results"]
    groups: dict[str, dict[str, float]] = {}
    for r in results:
        how = "1 at a time" if r["concurrency"] == 1 else f"{r['concurrency']} at a time"
        label = f"{r['database']}, {r['server']} x{r['workers']}, {r['view']}, {how}"
        groups.setdefault(label, {})[r["setting"]] = r["rps"]
    settings = list(dict.fromkeys(r["setting"] for r in results))
    colors = {
        "CONN_MAX_AGE=0": "#d8453b",
        "native pool": "#9bb7e0",
        "ours": "#3b7dd8",
        "ours, keep 4": "#2a9d5c",
    }
    figure, axes = plt.subplots(figsize=(9, 0.75 * len(groups) + 1.5))
    height = 0.8 / len(settings)
    for offset, setting in enumerate(settings):
        ys: list[float] = []
        values: list[float] = []
        for row, rps in enumerate(groups.values()):
            if setting in rps:
                ys.append(row - 0.4 + (offset + 0.5) * height)
                values.append(rps[setting])
        axes.barh(ys, values, height=height, color=colors.get(setting), label=setting)
        for y, value in zip(ys, values, strict=True):
            axes.text(value + 0.5, y, f"{value:.0f}", va="center", fontsize=7)
    axes.set_yticks(range(len(groups)), list(groups), fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("requests per second, median of rounds (higher is better)")
    axes.legend(fontsize=8, ncols=len(settings), loc="upper center", bbox_to_anchor=(0.5, -0.06))
    axes.set_title("ASGI servers: requests per second by connection setting", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def publish(files: list[Path], target: Path) -> None:
    """The table and chart of one run, or of several (one per set of servers) merged."""
    documents = [json.loads(path.read_text()) for path in files]
    document = {
        **documents[0],
        "results": [r for d in documents for r in d["results"]],
        "idle_timeout": [r for d in documents for r in d.get("idle_timeout", [])],
    }
    target.mkdir(parents=True, exist_ok=True)
    (target / "asgi.json").write_text(json.dumps(document, indent=2) + "\n")
    (target / "asgi.md").write_text(markdown(document))
    chart(document, target / "asgi.png")
    print(f"published to {target}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small and fast: CI's check")
    parser.add_argument("--databases", default="postgresql,mariadb")
    parser.add_argument("--database-name", default="django_thread_bench_asgi")
    parser.add_argument("--servers", default="uvicorn:1", help="e.g. uvicorn:1,daphne:4")
    parser.add_argument("--views", default=",".join(VIEWS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--keeps", default=str(CONCURRENCY), help="ours' OPTIONS['keep']s")
    parser.add_argument("--settings", help="only these contenders, ';' between names")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bursts", type=int, default=4)
    parser.add_argument("--json", type=Path, default=ROOT / ".bench" / "asgi.json")
    parser.add_argument("--publish", action="store_true", help="also write docs/benchmarks/")
    parser.add_argument("--chart", type=Path, nargs="+", help="only publish these results")
    args = parser.parse_args(argv)
    if args.chart:
        publish(args.chart, ROOT / "docs" / "benchmarks")
        return 0
    if args.quick:
        args.requests, args.rounds, args.bursts = 50, 1, 2
    vendors = configure(args.databases.split(","), args.database_name)
    document: dict[str, Any] = {"environment": environment(vendors), "quick": args.quick}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    document["results"] = run_load(args, vendors)
    args.json.write_text(json.dumps(document, indent=2) + "\n")  # kept if the bursts fail
    document["idle_timeout"] = run_bursts(args, vendors)
    args.json.write_text(json.dumps(document, indent=2) + "\n")
    print(markdown(document))
    print(f"results written to {args.json}")
    if args.publish:
        publish([args.json], ROOT / "docs" / "benchmarks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
