"""After: django_thread. The diff against legacy.py is the whole migration."""

import logging
import threading
import time

from digest.work import process_pending, send_digest
from django_thread import Thread, ThreadPoolExecutor, unit_of_work

logger = logging.getLogger(__name__)


def send_digests(subscriber_ids: list[int]) -> list[int]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(send_digest, subscriber_ids))


@unit_of_work()
def poll_once(failures: list[str]) -> None:
    try:
        process_pending()
    except Exception as exc:  # log and carry on: the next pass may succeed
        logger.exception("polling failed")
        failures.append(f"poll: {type(exc).__name__}: {exc}")


def poll(iterations: int, idle: float, failures: list[str]) -> None:
    for i in range(iterations):
        if i:
            time.sleep(idle)  # nothing to do: the connection sits idle
        poll_once(failures)


def start_poller(iterations: int, idle: float, failures: list[str]) -> threading.Thread:
    poller = Thread(target=poll, args=(iterations, idle, failures), name="poller")
    poller.start()
    return poller
