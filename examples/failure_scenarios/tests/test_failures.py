from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from shop.scenarios import SCENARIOS, Scenario

pytestmark = pytest.mark.django_db(transaction=True)

SERVER_ONLY = [s for s in SCENARIOS if s.needs_server]


IN_PROCESS = [s for s in SCENARIOS if s.name != "connection-limit"]


@pytest.mark.parametrize("scenario", IN_PROCESS, ids=lambda s: s.name)
def test_plain_threads_fail_and_django_thread_does_not(scenario: Scenario) -> None:
    if scenario.needs_server and connection.vendor == "sqlite":
        pytest.skip("needs a database server")
    plain, *others, ours = scenario.run()

    assert plain.ok, plain
    assert ours.ok, ours
    assert ours.implementation in ("django_thread", "unit_of_work loop")
    if scenario.name == "killed-sessions":
        # Only a unit whose query was in flight at the kill may fail.
        assert ours.failed < plain.failed // 10
    else:
        assert (plain.failed > 0, ours.failed) == (
            scenario.name != "thread-in-atomic",
            0,
        )
    for other in others:  # the "close in start()" variant of thread-in-atomic
        assert other.ok, other
        assert other.failed == 1, other


def test_server_scenarios_say_why_they_skip_on_sqlite() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    out = io.StringIO()
    call_command("failures", *[f"--scenario={s.name}" for s in SERVER_ONLY], stdout=out)
    assert out.getvalue().count("skipped: SQLite has no server") == len(SERVER_ONLY)


def test_connection_limit_scenario_as_a_command() -> None:
    # This scenario adds a database alias at run time, for a user it creates; Django's
    # test isolation refuses aliases a test did not declare, so it runs the way users
    # run it: the management command, against the configured (non-test) database.
    if connection.vendor == "sqlite":
        pytest.skip("needs a database server")
    done = subprocess.run(
        [sys.executable, "manage.py", "failures", "--scenario", "connection-limit"],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("django_thread") and " 0 of 16 " in line for line in lines)
    assert any(line.startswith("threading") and " 0 of 16 " not in line for line in lines)
    assert "still open after join: 0" in done.stdout
