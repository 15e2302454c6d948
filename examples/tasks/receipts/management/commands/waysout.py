"""python manage.py waysout: the same tasks on three backends, by changing TASKS only.

Runs `manage.py tasksrun` once per TASKS_VARIANT (see project/settings.py), each in a new
process as a deploy with new settings would, and fails if any of them did.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

MANAGE = Path(__file__).resolve().parents[3] / "manage.py"


class Command(BaseCommand):
    help = "Run the receipts app's tasks on our thread pool, django-tasks-db and RQ."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--variant", action="append", choices=settings.TASKS_VARIANTS)
        parser.add_argument("--timeout", type=int, default=180)

    def handle(self, *args: Any, variant: list[str] | None, timeout: int, **options: Any) -> None:
        failed = []
        for name in variant or list(settings.TASKS_VARIANTS):
            done = subprocess.run(
                [sys.executable, str(MANAGE), "tasksrun"],
                env={**os.environ, "TASKS_VARIANT": name},
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            self.stdout.write(done.stdout)
            if done.returncode:
                self.stderr.write(done.stderr)
                failed.append(name)
        if failed:
            raise CommandError(f"failed on: {', '.join(failed)}")
        self.stdout.write("the same tasks ran on every backend, by changing TASKS only\n")
