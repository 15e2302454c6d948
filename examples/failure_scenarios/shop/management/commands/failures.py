"""python manage.py failures: each scenario with plain threads and django_thread."""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from shop.scenarios import SCENARIOS, Row


class Command(BaseCommand):
    help = "Real failure scenarios against the database: plain threads vs django_thread."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--scenario",
            action="append",
            choices=[s.name for s in SCENARIOS],
            help="run only these scenarios (repeatable); default: all",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", verbosity=0, interactive=False)
        chosen = options["scenario"] or [s.name for s in SCENARIOS]
        problems = []
        for scenario in SCENARIOS:
            if scenario.name not in chosen:
                continue
            self.stdout.write(f"\n## {scenario.name}: {scenario.title}\n")
            if scenario.needs_server and connection.vendor == "sqlite":
                self.stdout.write(
                    "skipped: SQLite has no server to drop, kill or limit sessions.\n"
                )
                continue
            rows = scenario.run()
            self.stdout.write(table(rows))
            problems += [
                f"{scenario.name} / {r.implementation}: did not go as described"
                for r in rows
                if not r.ok
            ]
        if problems:
            raise CommandError("\n".join(problems))
        self.stdout.write(
            self.style.SUCCESS("\nOK: plain threads failed where described; django_thread did not.")
        )


def table(rows: list[Row]) -> str:
    lines = []
    for r in rows:
        lines.append(
            f"{r.implementation:<20} {r.failed:>3} of {r.units:<3} failed"
            + (f"  {r.detail}" if r.detail else "")
        )
        lines += [f"{'':<20}   {error}" for error in r.errors[:2]]
    return "\n".join(lines) + "\n"
