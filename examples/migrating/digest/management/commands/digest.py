"""python manage.py digest --variant legacy|modern|third-party

Runs the app (three bursts of digests, and a background poller) the way production
would: with idle time in between. On PostgreSQL and MariaDB the server is told to drop
sessions idle for more than a moment, as a firewall, a proxy or the server's own
timeout does overnight. Then it reports failures, and sessions left open.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, connections
from django.db.utils import load_backend

from digest import legacy, modern, third_party
from digest.models import Subscriber

VARIANTS = {
    "legacy": (legacy.send_digests, legacy.start_poller),
    "modern": (modern.send_digests, modern.start_poller),
    "third-party": (third_party.send_digests, modern.start_poller),
}


class Command(BaseCommand):
    help = "Run the digest app with plain threads, django_thread or a third-party pool."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--variant", choices=VARIANTS, required=True)

    def handle(self, *args: Any, variant: str, **options: Any) -> None:
        call_command("migrate", verbosity=0, interactive=False)
        Subscriber.objects.all().delete()
        ids = [Subscriber.objects.create(email=f"user{i}@example.com").pk for i in range(20)]
        send_digests, start_poller = VARIANTS[variant]
        with drop_idle_sessions() as idle:
            failures, left_open = run(send_digests, start_poller, ids, idle)

        self.stdout.write(f"variant: {variant}\n")
        self.stdout.write(f"failures: {len(failures)}\n")
        self.stdout.write("".join(f"  {f.splitlines()[0]}\n" for f in failures[:3]))
        self.stdout.write(f"sessions left open after the threads ended: {left_open}\n")
        if variant == "legacy":
            if not (left_open or failures):
                raise CommandError("expected the plain threads to fail or leak")
        elif failures or left_open:
            raise CommandError(f"{variant}: {len(failures)} failures, {left_open} left open")


def run(send_digests: Any, start_poller: Any, ids: list[int], idle: float) -> tuple[list[str], int]:
    """Three bursts of digests and a poller, idle in between; failures and leftovers."""
    sessions = SessionCounter()
    connection.close()  # count only the app's threads
    baseline = sessions.steady()

    failures: list[str] = []
    gc.disable()  # GC timing is luck: do not let it close leaked connections for us
    try:
        # Three bursts of work, idle in between, and a poller idling alongside.
        poller = start_poller(3, idle * 1.6, failures)
        for burst in range(3):
            if burst:
                time.sleep(idle * 1.6)
            try:
                send_digests(ids)
            except Exception as exc:
                failures.append(f"send_digests: {type(exc).__name__}: {exc}")
        poller.join()
        # Read before the server's own idle timeout reaps what the threads left.
        left_open = sessions.settle(baseline, timeout=0.3) - baseline
    finally:
        gc.enable()
        sessions.close()
    gc.collect()
    return failures, left_open


@contextlib.contextmanager
def drop_idle_sessions() -> Iterator[float]:
    """Make the server drop the app's sessions idle for a second; yield that second.

    Sessions opened from now on get the setting (every thread's connection reads
    OPTIONS from this dict when it opens); it is undone on the way out.
    """
    db = connections["default"].settings_dict
    saved = db["OPTIONS"]
    if connection.vendor == "postgresql":
        db["OPTIONS"] = {**saved, "options": "-c idle_session_timeout=1000"}
    elif connection.vendor == "mysql":
        db["OPTIONS"] = {**saved, "init_command": "SET SESSION wait_timeout=1"}
    try:
        # SQLite: no server drops anything, so the idle time is just idle.
        yield 1.0 if db["OPTIONS"] is not saved else 0.2
    finally:
        db["OPTIONS"] = saved


class SessionCounter:
    """Sessions on the database, asked on a connection of its own (SQLite: open files)."""

    def __init__(self) -> None:
        settings = copy.deepcopy(connections["default"].settings_dict)
        settings["OPTIONS"].pop("options", None)
        settings["OPTIONS"].pop("init_command", None)
        self.db = load_backend(settings["ENGINE"]).DatabaseWrapper(settings, "counter")

    def count(self) -> int:
        if self.db.vendor == "sqlite":
            target = Path(self.db.settings_dict["NAME"]).resolve()
            fds = os.listdir("/proc/self/fd")
            return sum(1 for fd in fds if _points_to(f"/proc/self/fd/{fd}", target))
        sql = {
            "postgresql": "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()",
            "mysql": "SELECT COUNT(*) FROM information_schema.processlist"
            " WHERE db = DATABASE() AND id <> CONNECTION_ID()",
        }[self.db.vendor]
        with self.db.cursor() as cursor:
            cursor.execute(sql)
            return int(cursor.fetchone()[0])

    def settle(self, expected: int, timeout: float) -> int:
        """The count once it is *expected*: a server sees a closed socket late."""
        deadline = time.monotonic() + timeout
        while (count := self.count()) != expected and time.monotonic() < deadline:
            time.sleep(0.02)
        return count

    def steady(self, timeout: float = 2.0) -> int:
        """The count once two reads 50 ms apart agree.

        Sessions closed just before (this thread's, an earlier run's) may still be
        listed for a few milliseconds: a baseline must not include them.
        """
        previous, deadline = self.count(), time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if (current := self.count()) == previous:
                return current
            previous = current
        return previous

    def close(self) -> None:
        self.db.close()


def _points_to(link: str, target: Path) -> bool:
    try:
        return Path(os.readlink(link)) == target
    except OSError:
        return False
