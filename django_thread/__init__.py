"""Drop-in :class:`threading.Thread` and :class:`concurrent.futures.ThreadPoolExecutor`
that look after Django's database connections the way the request cycle does."""

from django_thread._async import (
    SyncToAsync,
    database_sync_to_async,
    default_executor,
    sync_to_async,
)
from django_thread._connections import check_pooled_connection, unit_of_work
from django_thread._executor import ThreadPoolExecutor
from django_thread._thread import Thread

__all__ = [
    "SyncToAsync",
    "Thread",
    "ThreadPoolExecutor",
    "check_pooled_connection",
    "database_sync_to_async",
    "default_executor",
    "sync_to_async",
    "unit_of_work",
]
