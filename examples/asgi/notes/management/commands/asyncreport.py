"""Async code calling the ORM through each bridge while the server drops idle sessions."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from django.conf import settings
from django.core.management import BaseCommand, CommandError, call_command
from django.db import DatabaseError, connection

from django_thread import default_executor
from notes.bridges import BRIDGES
from notes.faults import idle_timeout_options
from notes.models import Note

IDLE_TIMEOUT = 1.0  # seconds; the pause between calls is longer


@dataclass
class Run:
    label: str
    calls: int
    failed: int


def server_sessions() -> int:
    """Sessions the server has open on this database, this command's own included."""
    if connection.vendor == "sqlite":
        return 0
    query = {
        "postgresql": "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()",
        "mysql": "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE()",
    }[connection.vendor]
    try:
        with connection.cursor() as cursor:
            cursor.execute(query)
            return cursor.fetchone()[0]
    finally:
        connection.close()  # a fresh session each time: this one would be dropped idle


async def calls(label: str, bridge, *, thread_sensitive: bool, n: int, pause: float) -> Run:
    failed = 0
    for i in range(n):
        if i:
            await asyncio.sleep(pause)  # every session this bridge holds goes idle
        try:
            await bridge(Note.objects.count, thread_sensitive=thread_sensitive)()
        except DatabaseError:
            failed += 1
    return Run(label, n, failed)


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--calls", type=int, default=4)

    def handle(self, *args, **options):
        calls_count = options["calls"]
        call_command("migrate", verbosity=0)
        connection.close()
        # From here on, every new session is dropped after IDLE_TIMEOUT idle.
        options_dict = settings.DATABASES["default"].setdefault("OPTIONS", {})
        options_dict.update(idle_timeout_options(connection.settings_dict["ENGINE"], IDLE_TIMEOUT))
        server = connection.vendor != "sqlite"
        pause = IDLE_TIMEOUT * 1.6
        baseline = server_sessions()
        ours = asyncio.run(
            calls(
                "django_thread sync_to_async(thread_sensitive=False)",
                BRIDGES["django_thread"],
                thread_sensitive=False,
                n=calls_count,
                pause=pause,
            )
        )
        default_executor().shutdown(wait=True)  # our pool's threads close their connections
        held = server_sessions() - baseline
        runs = [ours, *asyncio.run(self.others(calls_count, pause))]
        self.stdout.write(f"{'bridge':<62} calls  failed")
        for run in runs:
            self.stdout.write(f"{run.label:<62} {run.calls:>5}  {run.failed:>6}")
        self.stdout.write(f"sessions left open by django_thread's pool after its shutdown: {held}")
        plain = [r for r in runs if r.label.startswith("asgiref")]
        problems = [
            f"{r.label} failed {r.failed} of {r.calls}"
            for r in runs
            if r.label.startswith("django_thread") and r.failed
        ]
        if held > 0:
            problems.append(f"{held} session(s) still open after django_thread's pool shut down")
        if server and not any(r.failed for r in plain):
            problems.append("asgiref's bridge failed no call: the idle timeout did not happen")
        if problems:
            raise CommandError("; ".join(problems))
        self.stdout.write("OK: django_thread's bridge failed no call and left no session open")

    async def others(self, n: int, pause: float) -> list[Run]:
        return [
            await calls(
                "asgiref sync_to_async(thread_sensitive=False)",
                BRIDGES["asgiref"],
                thread_sensitive=False,
                n=n,
                pause=pause,
            ),
            # Thread-sensitive calls made outside a request run in one long-lived thread
            # of asgiref's, which keeps its persistent connection between calls.
            await calls(
                "channels database_sync_to_async (thread-sensitive)",
                BRIDGES["channels"],
                thread_sensitive=True,
                n=n,
                pause=pause,
            ),
            await calls(
                "django_thread database_sync_to_async (thread-sensitive)",
                BRIDGES["django_thread_channels_name"],
                thread_sensitive=True,
                n=n,
                pause=pause,
            ),
        ]
