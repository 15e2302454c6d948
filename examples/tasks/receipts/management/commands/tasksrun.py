"""python manage.py tasksrun: enqueue receipts on whichever backend TASKS names, run them.

With TASKS_VARIANT=threads the tasks run in this process, on django_thread's pool; with
`database` this command then runs django-tasks-db's `db_worker --batch`, with `rq`
django-rq's `rqworker --burst` (both exit once the queues are empty; an alarm bounds them
anyway). Then it checks every result and every row, and exits non-zero unless each task
ran exactly once and succeeded.
"""

from __future__ import annotations

import signal
import time
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.tasks import TaskResultStatus, task_backends

from receipts.models import Receipt
from receipts.tasks import write_receipt, write_urgent_receipt

WORKERS = {
    "database": ["db_worker", "--batch", "--queue-name", "*", "--no-startup-delay"],
    # SimpleWorker runs jobs in this process: no fork while this process holds a
    # connection (the default worker forks one process per job).
    "rq": [
        "rqworker",
        "default",
        "urgent",
        "--burst",
        "--job-class",
        "django_tasks_rq.Job",
        "--worker-class",
        "rq.worker.SimpleWorker",
    ],
}


class Command(BaseCommand):
    help = "Enqueue receipts on the TASKS backend, run them, and check the rows."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--count", type=int, default=20)
        parser.add_argument("--timeout", type=int, default=120)

    def handle(self, *args: Any, count: int, timeout: int, **options: Any) -> None:
        variant = settings.TASKS_VARIANT
        backend = task_backends["default"]
        call_command("migrate", verbosity=0, interactive=False)
        Receipt.objects.filter(variant=variant).delete()

        results = [write_receipt.enqueue(order, variant) for order in range(count)]
        results.append(write_urgent_receipt.enqueue(count, variant))
        if variant in WORKERS:
            self.run_worker(WORKERS[variant], timeout)
        deadline = time.monotonic() + timeout
        for result in results:
            while not result.is_finished and time.monotonic() < deadline:
                time.sleep(0.01)
                result.refresh()
        if hasattr(backend, "shutdown"):  # django_thread's: wait, close every connection
            backend.shutdown()

        statuses = sorted({str(r.status) for r in results})
        orders = sorted(Receipt.objects.filter(variant=variant).values_list("order", flat=True))
        self.stdout.write(f"variant: {variant}\n")
        self.stdout.write(f"backend: {type(backend).__module__}.{type(backend).__name__}\n")
        self.stdout.write(f"tasks: {len(results)}\n")
        self.stdout.write(f"statuses: {', '.join(statuses)}\n")
        self.stdout.write(f"rows: {len(orders)}\n")
        ok = statuses == [TaskResultStatus.SUCCESSFUL] and orders == list(range(count + 1))
        if not ok:
            errors = [e.traceback for r in results for e in r.errors][:1]
            raise CommandError(f"{variant}: not every task ran once and succeeded {errors}")

    def run_worker(self, command: list[str], timeout: int) -> None:
        def expired(*args: object) -> None:
            raise CommandError(f"{command[0]} still running after {timeout}s")

        previous = signal.signal(signal.SIGALRM, expired)
        signal.alarm(timeout)
        try:
            call_command(*command, verbosity=0)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
