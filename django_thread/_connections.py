"""What happens to a thread's Django database connections, and when.

Django looks after connections only around HTTP requests: ``request_started`` and
``request_finished`` both call :func:`django.db.close_old_connections`, which lets
``CONN_MAX_AGE`` and ``CONN_HEALTH_CHECKS`` do their work. This module applies the
same policy to units of work in other threads, plus the one thing a request never
needs: closing everything when the thread itself ends.

Every function here acts on the *calling* thread's connections only, because
``django.db.connections`` is thread-local. Callers must therefore run them in the
worker thread, never in the thread that started or submitted the work.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from contextlib import ContextDecorator
from types import TracebackType
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

logger = logging.getLogger("django_thread")


# The connections each thread has opened (id -> wrapper), kept up to date by the
# connection_created signal. Asking Django for a thread's connections
# (connections.all()) costs microseconds per alias, as much as a small task itself;
# this answers "none" for free in the common case of a thread that has not touched
# the database. It is complete for threads born after this module was imported
# (ours); unit_of_work() adopts, once, what an older thread opened before.
_opened = threading.local()


# Flags set on a threading.Thread object: cheaper to read than a thread-local, which
# costs its first-touch set-up in every thread that reads it.
_MANAGED = "_django_thread_managed"  # it runs units of work for us
_CONNECTED = "_django_thread_connected"  # it has opened a connection


def _remember(sender: object, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    # connection_created is sent from connect(), in the thread that connects.
    try:
        _opened.wrappers[id(connection)] = connection
    except AttributeError:  # this thread's first connection
        _opened.wrappers = {id(connection): connection}
    thread = threading.current_thread()
    setattr(thread, _CONNECTED, True)
    if getattr(thread, _MANAGED, False):
        _advise_on_reconnects(connection)


def has_connected(thread: threading.Thread) -> bool:
    """Whether *thread* has ever opened a database connection."""
    return bool(getattr(thread, _CONNECTED, False))


_advised: set[str] = set()


def _advise_on_reconnects(connection: BaseDatabaseWrapper) -> None:
    """Say once per alias when CONN_MAX_AGE = 0 makes our threads connect per unit.

    Correct, and Django's default, but each unit of work then pays a connect (several
    times the cost of a small query): threaded work wants persistent connections with
    health checks, or Django's native pool.
    """
    seen: set[str] = _opened.__dict__.setdefault("aliases", set())
    alias = connection.alias
    settings = connection.settings_dict
    if (
        alias in seen
        and alias not in _advised
        and settings["CONN_MAX_AGE"] == 0
        and not settings["OPTIONS"].get("pool")
    ):
        _advised.add(alias)
        logger.warning(
            "django_thread: database %r has CONN_MAX_AGE = 0, so every unit of work in "
            "a thread opens a new connection. For threaded work, set CONN_MAX_AGE "
            "(e.g. None) with CONN_HEALTH_CHECKS = True, or use Django's native "
            "PostgreSQL pool. See the django-thread docs on choosing these settings.",
            alias,
        )
    seen.add(alias)


def mark_managed(thread: threading.Thread) -> None:
    """Note that *thread* runs units of work for django_thread."""
    setattr(thread, _MANAGED, True)


connection_created.connect(_remember, weak=False, dispatch_uid="django_thread")


def _adopt_earlier_connections() -> None:
    """Take in connections this thread opened before we were listening."""
    if not getattr(_opened, "adopted", False):
        for conn in connections.all(initialized_only=True):
            _remember(None, conn)
        _opened.adopted = True


def begin_unit() -> None:
    """Prepare this thread's connections for a unit of work, as a request start does."""
    wrappers: dict[int, BaseDatabaseWrapper] | None = getattr(_opened, "wrappers", None)
    if wrappers:  # a thread that never connected has nothing to tidy
        for conn in wrappers.values():
            conn.queries_log.clear()  # what reset_queries() does
        _close_old_connections(wrappers.values())


def end_unit() -> None:
    """Tidy this thread's connections after a unit of work, as a request finish does."""
    wrappers: dict[int, BaseDatabaseWrapper] | None = getattr(_opened, "wrappers", None)
    if wrappers:
        _close_old_connections(wrappers.values())
        # Forget the ones now closed (CONN_MAX_AGE = 0, broken), so that a thread
        # whose connections are all closed takes the free path again; connecting
        # anew puts them back. Their query log is what reset_queries() would clear.
        for key, conn in list(wrappers.items()):
            if conn.connection is None:
                conn.queries_log.clear()
                del wrappers[key]


def close_thread_connections() -> None:
    """Close every connection this thread opened, whatever ``CONN_MAX_AGE`` says.

    Called when a thread or pool worker ends. ``close_old_connections()`` is not
    enough there: it keeps young persistent connections open, and once the thread
    is gone nobody can reuse them. Django's connection objects sit in reference
    cycles, so their sockets would stay open until the cyclic garbage collector
    happens to run.
    """
    wrappers: dict[int, BaseDatabaseWrapper] = getattr(_opened, "wrappers", {})
    for conn in wrappers.values():
        try:
            conn.close()
        except Exception:
            logger.exception("django_thread: closing database connection %r failed", conn.alias)
    wrappers.clear()


def _close_old_connections(wrappers: Iterable[BaseDatabaseWrapper]) -> None:
    # django.db.close_old_connections(), with two differences:
    # - A connection inside an atomic block is left alone. Django's
    #   close_if_unusable_or_obsolete() closes it (autocommit differs from the
    #   setting inside atomic()), and Atomic.__exit__ then skips the commit: the
    #   transaction is silently lost. This matters for unit_of_work() used inside
    #   the caller's own atomic().
    # - One alias failing to close does not stop the others, and never raises:
    #   cleanup must not replace the unit's own result or exception.
    for conn in wrappers:
        if conn.in_atomic_block:
            continue
        try:
            conn.close_if_unusable_or_obsolete()
        except Exception:
            logger.exception("django_thread: closing database connection %r failed", conn.alias)


class unit_of_work(ContextDecorator):  # noqa: N801 - reads like transaction.atomic
    """Treat a block or a function as one unit of work, the way Django treats a request.

    On entry, the calling thread's query log is reset and its obsolete or unusable
    connections are closed (honouring ``CONN_MAX_AGE`` and arming
    ``CONN_HEALTH_CHECKS``); on exit, also when the block raised, obsolete or
    unusable connections are closed again. Connections inside an atomic block are
    never closed.

    :class:`django_thread.Thread` and :class:`django_thread.ThreadPoolExecutor`
    already do this for every unit they run. Use it in threads this library does
    not create: each iteration of a long-running loop, functions given to
    :func:`asyncio.to_thread` or another executor, callbacks of a third-party pool::

        while not stopping.is_set():
            with unit_of_work():
                process_next_batch()

        @unit_of_work()
        def handle(message): ...

    It never closes young connections: a thread that ends must close its own with
    ``django.db.connections.close_all()`` (our classes do it for you).
    """

    def __enter__(self) -> None:
        _adopt_earlier_connections()  # this may be any thread, born before our import
        begin_unit()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        end_unit()
