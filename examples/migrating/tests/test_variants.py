from __future__ import annotations

import difflib
import io
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

pytestmark = pytest.mark.django_db(transaction=True)

APP = Path(__file__).resolve().parent.parent / "digest"


def run(variant: str) -> dict[str, int]:
    out = io.StringIO()
    call_command("digest", variant=variant, stdout=out)
    report = dict(
        line.split(": ", 1)
        for line in out.getvalue().splitlines()
        if ": " in line and not line.startswith(" ")
    )
    return {
        "failures": int(report["failures"]),
        "left open": int(report["sessions left open after the threads ended"]),
    }


def test_legacy_threads_fail_or_leak() -> None:
    result = run("legacy")
    if connection.vendor == "sqlite":
        # No server drops anything, but 4 pool threads x 3 bursts and the poller
        # leave their connections open until the garbage collector runs.
        assert result == {"failures": 0, "left open": 13}
    else:
        # The poller's connection was dropped while idle: its next passes fail. The
        # last burst's 4 pool threads are gone, their sessions are not.
        assert result == {"failures": 2, "left open": 4}


@pytest.mark.parametrize("variant", ["modern", "third-party"])
def test_django_thread_neither_fails_nor_leaks(variant: str) -> None:
    assert run(variant) == {"failures": 0, "left open": 0}


def test_the_migration_is_imports_and_one_decorator() -> None:
    legacy = (APP / "legacy.py").read_text().splitlines()
    modern = (APP / "modern.py").read_text().splitlines()
    added = [line[2:].strip() for line in difflib.ndiff(legacy, modern) if line[:2] == "+ "]
    assert added == [
        '"""After: django_thread. The diff against legacy.py is the whole migration."""',
        "from django_thread import Thread, ThreadPoolExecutor, unit_of_work",
        "@unit_of_work()",
        'poller = Thread(target=poll, args=(iterations, idle, failures), name="poller")',
    ]


def test_missing_variant_is_refused() -> None:
    with pytest.raises(CommandError):
        call_command("digest", variant="nope")
