"""A worker thread that reorders out-of-stock books, forever, one pass at a time."""

import threading

from cookbook.models import Book
from django_thread import Thread, unit_of_work


class ReorderWorker(Thread):
    def __init__(self, idle: float = 5.0, max_passes: int | None = None) -> None:
        super().__init__(name="reorder-worker", daemon=True)
        self.idle = idle
        self.max_passes = max_passes
        self.passes = 0
        self.reordered = threading.Event()  # set after a pass that reordered something
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set() and self.passes != self.max_passes:
            with unit_of_work():  # one pass = one unit of work, like a request
                if self.reorder_out_of_stock():
                    self.reordered.set()
            self.passes += 1
            self._stopping.wait(self.idle)  # the connection sits idle here

    def reorder_out_of_stock(self) -> int:
        return Book.objects.filter(in_stock=False).update(in_stock=True)

    def stop(self) -> None:
        self._stopping.set()
        self.join()
