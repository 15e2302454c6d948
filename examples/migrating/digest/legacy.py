"""Before: plain threading and concurrent.futures."""

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from digest.work import process_pending, send_digest

logger = logging.getLogger(__name__)


def send_digests(subscriber_ids: list[int]) -> list[int]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(send_digest, subscriber_ids))


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
    poller = threading.Thread(target=poll, args=(iterations, idle, failures), name="poller")
    poller.start()
    return poller
