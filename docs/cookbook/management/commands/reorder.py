from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from cookbook.recipes.worker import ReorderWorker


class Command(BaseCommand):
    help = "Reorder out-of-stock books until stopped (or for --passes passes)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--idle", type=float, default=5.0)
        parser.add_argument("--passes", type=int, help="stop after this many passes")

    def handle(self, *args: Any, idle: float, passes: int | None, **options: Any) -> None:
        worker = ReorderWorker(idle=idle, max_passes=passes)
        worker.start()
        try:
            while worker.is_alive():
                worker.join(timeout=1)  # the main thread stays free for Ctrl+C
        except KeyboardInterrupt:
            self.stderr.write("stopping...")
        finally:
            worker.stop()  # joins: the worker's connection is closed by then
        self.stdout.write(f"reorder worker stopped after {worker.passes} passes")
