"""python manage.py connreport: the same workload under each connection setting."""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from ledger.workload import IMPLEMENTATIONS, SETTINGS, Result, run


class Command(BaseCommand):
    help = (
        "Run a ThreadPoolExecutor and a few Threads doing ORM work under each "
        "CONN_MAX_AGE / CONN_HEALTH_CHECKS / pool setting, with the stdlib classes "
        "and with django_thread, and report what the database saw."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--units", type=int, default=200, help="pool tasks per run")
        parser.add_argument("--workers", type=int, default=4)
        parser.add_argument("--threads", type=int, default=4)
        parser.add_argument(
            "--setting",
            action="append",
            choices=[s.label for s in SETTINGS],
            help="run only these settings (repeatable)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", verbosity=0, interactive=False)
        settings = [s for s in SETTINGS if s.label in (options["setting"] or [s.label])]
        if connection.vendor != "postgresql":
            self.stdout.write("Django's native pool is PostgreSQL only: skipping it.\n")
            settings = [s for s in settings if not s.pool]

        results = [
            run(
                setting,
                implementation,
                options["units"],
                options["workers"],
                options["threads"],
            )
            for setting in settings
            for implementation in IMPLEMENTATIONS
        ]
        self.stdout.write(table(results))
        problems = check(results, pool_size=options["workers"] + options["threads"])
        if problems:
            raise CommandError("\n".join(problems))
        self.stdout.write(
            self.style.SUCCESS(
                "OK: django_thread failed no unit and left no connection open; "
                "the stdlib classes left connections for the garbage collector."
            )
        )


COLUMNS = (
    "setting",
    "implementation",
    "units",
    "connects",
    "reused",
    "sessions",
    "held at end",
    "failed",
    "units/s",
)


def table(results: list[Result]) -> str:
    rows = [COLUMNS] + [
        (
            r.setting,
            r.implementation,
            str(r.units),
            str(r.connects),
            str(r.reused),
            str(r.sessions),
            str(r.held_at_end),
            str(r.failed),
            f"{r.per_second:.0f}",
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def check(results: list[Result], pool_size: int) -> list[str]:
    """What did not happen as this project claims; empty when all did."""
    problems = []
    for r in results:
        where = f"{r.setting} / {r.implementation}"
        if r.failed:
            problems.append(f"{where}: {r.failed} units failed: {r.errors[:2]}")
        pooled = r.setting == "native pool"
        if r.implementation == "django_thread":
            # With the pool, idle sessions stay in the pool (up to its size), by design.
            limit = pool_size if pooled else 0
            if r.held_at_end > limit:
                problems.append(f"{where}: {r.held_at_end} connections left open")
        elif r.held_at_end == 0:
            problems.append(f"{where}: expected the plain threads to leave connections")
    return problems
