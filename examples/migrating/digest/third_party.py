"""A pool django_thread does not replace: only unit_of_work applies.

multiprocessing.pool.ThreadPool stands in for any pool you cannot swap out (an SDK's
callback threads, a scheduler's executor). Decorating the function it runs makes each
call a unit of work: health checks are armed, obsolete connections closed.

A thread that ran a unit of work also closes its connections when it ends, as its
thread-local state is torn down; but when the pool's threads end is the pool's business.
To have them closed when send_digests() returns, whatever the pool does with its
threads, close them in each worker before the pool ends (as below), or run that work
with CONN_MAX_AGE = 0 or Django's native PostgreSQL pool.
"""

import threading
from multiprocessing.pool import ThreadPool

from django.db import connections

from digest.work import send_digest
from django_thread import unit_of_work

send_digest_as_unit = unit_of_work()(send_digest)


def send_digests(subscriber_ids: list[int]) -> list[int]:
    workers = 4
    with ThreadPool(workers) as pool:
        results = pool.map(send_digest_as_unit, subscriber_ids)
        # Close each worker's connections from inside that worker: the barrier makes
        # every worker take exactly one of these calls.
        barrier = threading.Barrier(workers)

        def close_this_workers_connections(_: int) -> None:
            barrier.wait()
            connections.close_all()

        pool.map(close_this_workers_connections, range(workers), chunksize=1)
    return results
