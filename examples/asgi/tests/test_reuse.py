"""Our ENGINE under uvicorn: request threads hand their sessions on to the next ones.

Under ASGI each request's synchronous code runs in a thread made for that request, so
with Django's own ENGINE every request opens a session. With django-thread's, served by
two uvicorn workers, a worker opens about as many as it serves requests at once. Each
view answers with its worker's pid and the server-side id of the session it queried on.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from django.db import connection
from notes.management.commands.asyncreport import server_sessions

from tests.test_asgi import database_url

pytestmark = pytest.mark.django_db(transaction=True)

HERE = Path(__file__).resolve().parent.parent
WORKERS = 2
REQUESTS = 200
AT_ONCE = 16


@contextmanager
def serve(settings: str, workers: int) -> Iterator[str]:
    """uvicorn with *workers* processes serving the project on the test database."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DATABASE_URL": database_url(), "DJANGO_SETTINGS_MODULE": settings}
    args = ["--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    # 5 s can close a kept-alive connection as the client reuses it, and, on a loaded
    # machine, kill a worker still importing Django (then the next, and so on).
    args += ["--timeout-keep-alive", "60", "--timeout-worker-healthcheck", "120"]
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "project.asgi:application", *args], cwd=HERE, env=env
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180  # a loaded machine starts Django slowly
    while True:
        try:
            httpx.get(f"{url}/count/asgiref/", timeout=30)  # any worker is up
            break
        except httpx.TransportError:
            assert server.poll() is None, "uvicorn exited"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.2)
    try:
        yield url
    finally:
        server.terminate()
        server.wait(30)


def sessions_per_worker(url: str, path: str, requests: int, at_once: int) -> dict[int, int]:
    """Send *requests*, *at_once* at a time; how many sessions served them, per worker."""

    async def run() -> list[dict[str, int]]:
        gate = asyncio.Semaphore(at_once)
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:

            async def one() -> dict[str, int]:
                async with gate:
                    response = await client.get(path)
                    assert response.status_code == 200, response.text
                    return response.json()

            return await asyncio.gather(*(one() for _ in range(requests)))

    seen: dict[int, set[int]] = {}
    for answer in asyncio.run(run()):
        seen.setdefault(answer["pid"], set()).add(answer["session"])
    return {pid: len(sessions) for pid, sessions in seen.items()}


@pytest.fixture(autouse=True)
def on_a_server() -> None:
    if connection.vendor == "sqlite":
        pytest.skip("SQLite has no server sessions to count")


def settle(baseline: int) -> int:
    """The server's session count once it is back to *baseline*, or after 10 s."""
    deadline = time.monotonic() + 10
    while (now := server_sessions()) > baseline and time.monotonic() < deadline:
        time.sleep(0.1)  # a server notices a closed socket asynchronously
    return now


def test_django_engine_opens_a_session_per_request() -> None:
    # What the ENGINE changes, counted the same way: the count can see it.
    connection.close()
    with serve("project.settings", 1) as url:
        assert sum(sessions_per_worker(url, "/session/sync/", 20, 1).values()) == 20


@pytest.mark.parametrize("view", ["sync", "async"])
def test_our_engine_reuses_sessions_across_requests(view: str) -> None:
    baseline = server_sessions()
    with serve("tests.reuse_settings", WORKERS) as url:
        one_at_a_time = sessions_per_worker(url, f"/session/{view}/", REQUESTS, 1)
        at_once = sessions_per_worker(url, f"/session/{view}/", REQUESTS, AT_ONCE)
    # A request's thread gives its session back as the request ends, which Django
    # reaches just after sending the answer, so the client's next requests can connect
    # first: one at a time, a worker opens one or two; 16 at a time, 16 or 17 (19 to 20
    # when threads gave back only as they ended), and never twice as many.
    assert max(one_at_a_time.values()) <= 3, one_at_a_time
    assert max(at_once.values()) <= 2 * AT_ONCE, at_once
    assert settle(baseline) == baseline  # none held after the server stopped
