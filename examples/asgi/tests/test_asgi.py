"""The example under real ASGI servers (uvicorn, Daphne), and Channels' test communicator.

On PostgreSQL and MariaDB the database server drops sessions idle for 1 s
(IDLE_TIMEOUT), and each client pauses longer than that between calls.
"""

from __future__ import annotations

import io
import json
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
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from notes.faults import idle_timeout_options
from notes.management.commands.asyncreport import server_sessions
from websockets.sync.client import connect

pytestmark = pytest.mark.django_db(transaction=True)

IDLE_TIMEOUT = 1.0
PAUSE = IDLE_TIMEOUT * 1.6
CALLS = 4
HERE = Path(__file__).resolve().parent.parent


def on_a_server() -> bool:
    return connection.vendor != "sqlite"


def test_the_command_reports_and_succeeds() -> None:
    out = io.StringIO()
    call_command("asyncreport", calls=3, stdout=out, stderr=io.StringIO())
    assert "OK: django_thread's bridge failed no call" in out.getvalue()


def database_url() -> str:
    """The test database, as a URL for the server process."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    scheme = {"postgresql": "postgres", "mysql": "mysql"}[connection.vendor]
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"{scheme}://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT']}/{db['NAME']}"


# Each ASGI server's command line, serving the project on a port.
SERVERS = {
    "uvicorn": ["uvicorn", "project.asgi:application", "--port"],
    "daphne": ["daphne", "project.asgi:application", "--bind", "127.0.0.1", "--port"],
}


@contextmanager
def serve(name: str) -> Iterator[str]:
    """The ASGI server *name* serving the project on the test database; its address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DATABASE_URL": database_url(), "IDLE_TIMEOUT": str(IDLE_TIMEOUT)}
    server = subprocess.Popen(
        [sys.executable, "-m", *SERVERS[name], str(port)],
        cwd=HERE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # Daphne imports Twisted and autobahn: on a loaded machine that alone takes a while.
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert server.poll() is None, server.communicate()[0]
                assert time.monotonic() < deadline, f"{name} did not start"
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        # Also when it did not start in time: no server outlives its test.
        server.terminate()
        try:
            server.wait(30)
        finally:
            server.kill()  # does nothing once it has exited
        connection.close()


@pytest.fixture(scope="class", params=SERVERS)
def server(request: pytest.FixtureRequest, django_db_setup: None) -> Iterator[str]:
    """Each ASGI server in turn, serving the project; its address.

    One server for the class's tests (starting one takes longer than a test), stopped
    before the tests that count the database's sessions run.
    """
    with serve(request.param) as address:
        yield address


class TestUnderAServer:
    """The async view and the consumer, served by uvicorn, then by Daphne."""

    def test_async_view(self, server: str) -> None:
        # One pause per round for both bridges: they run on different executors (asyncio's
        # default one, django_thread's pool), so neither call keeps the other's session alive.
        failed = {"asgiref": 0, "django_thread": 0}
        with httpx.Client(base_url=f"http://{server}", timeout=30) as client:
            for i in range(CALLS):
                if i:
                    time.sleep(PAUSE)
                for bridge in failed:
                    response = client.get(f"/count/{bridge}/")
                    failed[bridge] += response.status_code == 503
                    assert response.status_code in (200, 503), response.text
        print(f"calls failed of {CALLS}: {failed}")
        assert failed["django_thread"] == 0
        if on_a_server():
            # asyncio's default executor keeps each thread's session until it is dropped.
            assert failed["asgiref"] >= 1

    def test_consumer(self, server: str) -> None:
        # Channels' bridge tidies before and after each call (close_old_connections), so
        # through a real server it fails no call either. Both bridges run in asgiref's one
        # thread for thread-sensitive calls, on one session: after each pause the bridge
        # that goes first meets the dropped session, so they take turns going first.
        bridges = ("channels", "django_thread")
        answers: dict[str, list[dict[str, object]]] = {bridge: [] for bridge in bridges}
        with (
            connect(f"ws://{server}/ws/count/channels/") as channels,
            connect(f"ws://{server}/ws/count/django_thread/") as ours,
        ):
            sockets = {"channels": channels, "django_thread": ours}
            for i in range(CALLS):
                if i:
                    time.sleep(PAUSE)
                for bridge in bridges[::-1] if i % 2 else bridges:
                    sockets[bridge].send("count")
                    answers[bridge].append(json.loads(sockets[bridge].recv(timeout=30)))
        failed = {bridge: sum("error" in a for a in answers[bridge]) for bridge in bridges}
        print(f"calls failed of {CALLS}: {failed}")
        assert failed == {"channels": 0, "django_thread": 0}, answers


@pytest.mark.parametrize("name", SERVERS)
def test_sessions_back_to_baseline_after_the_server_stops(name: str) -> None:
    baseline = server_sessions()
    with serve(name) as address, httpx.Client(base_url=f"http://{address}", timeout=30) as client:
        for _ in range(CALLS):
            assert client.get("/count/django_thread/").status_code == 200
        during = server_sessions()
    deadline = time.monotonic() + 10
    while (after := server_sessions()) > baseline and time.monotonic() < deadline:
        time.sleep(0.1)  # a server notices a closed socket asynchronously
    assert after == baseline
    if on_a_server():
        assert during > baseline  # the pool's thread held its session meanwhile


@pytest.fixture
def idle_timeout() -> Iterator[None]:
    """Sessions opened from now on are dropped after IDLE_TIMEOUT idle."""
    options = settings.DATABASES["default"].setdefault("OPTIONS", {})
    saved = dict(options)
    connection.close()  # the test's own session opens again with the timeout
    options.update(idle_timeout_options(connection.settings_dict["ENGINE"], IDLE_TIMEOUT))
    try:
        yield
    finally:
        connection.close()
        options.clear()
        options.update(saved)


def communicate(bridge: str) -> list[dict[str, object]]:
    from project.asgi import application  # noqa: PLC0415

    async def run() -> list[dict[str, object]]:
        communicator = WebsocketCommunicator(application, f"/ws/count/{bridge}/")
        connected, _ = await communicator.connect()
        assert connected
        answers = []
        for i in range(CALLS):
            if i:
                time.sleep(PAUSE)  # blocks the loop: nothing else should run meanwhile
            await communicator.send_to(text_data="count")
            answers.append(json.loads(await communicator.receive_from(timeout=30)))
        await communicator.disconnect()
        return answers

    return async_to_sync(run)()


def test_consumer_through_channels_websocket_communicator(idle_timeout: None) -> None:
    # WebsocketCommunicator replaces close_old_connections() with a no-op while the
    # consumer runs: Channels' bridge then never tidies, and fails calls in tests that
    # it does not fail under a real server. Ours does not rely on it.
    ours = communicate("django_thread")
    assert [a.get("error") for a in ours] == [None] * CALLS
    if on_a_server():
        theirs = communicate("channels")
        assert any(a.get("error") for a in theirs), theirs
