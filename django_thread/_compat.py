"""Every private detail of Python, Django, asgiref, psycopg and mysqlclient we rely on.

Nothing else in the package reaches past a public API. Each detail below has a canary
in tests/test_compat.py that fails, naming the detail, on the first Python, Django or
asgiref that changes it.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import concurrent.futures.thread
import ctypes
import functools
import threading
from collections.abc import Callable
from typing import Any

from asgiref.sync import SyncToAsync
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

# --- concurrent.futures.thread ---------------------------------------------------------

# The executor's work queue: made in __init__, first read by the first submit(). Its
# worker loop reads it in the worker thread only, once per task, and exits on None.
WORK_QUEUE = "_work_queue"


def max_workers(executor: concurrent.futures.ThreadPoolExecutor) -> int:
    """The executor's own reading of *max_workers* (None gives the stdlib's default)."""
    count: int = executor._max_workers
    return count


def work_item_function(item: Any) -> Any:
    """The function a work item runs: ``.fn`` up to 3.13, ``.task[0]`` from 3.14.

    Anything else (the initializer, a django.tasks function) is its own function.
    """
    fn = getattr(item, "fn", None)
    return getattr(item, "task", (item,))[0] if fn is None else fn


def make_work_item_raise(item: Any, exc: BaseException) -> None:
    """Turn a work item into one that raises *exc*, so that its future reports it."""

    def fail() -> None:
        raise exc

    if hasattr(item, "fn"):
        item.fn, item.args, item.kwargs = fail, (), {}
    else:
        item.task = (fail, (), {})


def start_workers_as_daemons(
    executor: concurrent.futures.ThreadPoolExecutor, adjust: Callable[[], None]
) -> None:
    """Run the stdlib's ``_adjust_thread_count`` (*adjust*) so that a worker it starts is
    a daemon thread, which interpreter exit does not wait for.

    A new thread inherits ``daemon`` from the thread that makes it: one is made in a
    daemon thread of ours only when the stdlib is about to start one.
    """
    if threading.current_thread().daemon or len(executor._threads) >= executor._max_workers:
        adjust()
    elif not executor._idle_semaphore.acquire(timeout=0):  # as the stdlib: none idle
        maker = threading.Thread(target=adjust, daemon=True)
        maker.start()
        maker.join()


def forget_worker(thread: threading.Thread) -> None:
    """Take a worker off the list the stdlib's exit hook joins, with no timeout."""
    concurrent.futures.thread._threads_queues.pop(thread, None)  # type: ignore[attr-defined]


# threading's exit hooks run before atexit's, last registered first: the stdlib's
# pool joins its workers from one, so a hook that must run before it registers here.
def _atexit(func: Callable[[], None]) -> None:  # pragma: no cover - every CPython has it
    atexit.register(func)


register_before_pools_join: Callable[[Callable[[], None]], None] = getattr(
    threading, "_register_atexit", _atexit
)


def is_shut_down(executor: concurrent.futures.Executor) -> bool:
    """Whether ``shutdown()`` was called on a stdlib pool (``asyncio.run()`` calls it on
    its default executor)."""
    return bool(getattr(executor, "_shutdown", False))


# --- asgiref ---------------------------------------------------------------------------

# SyncToAsync keeps the executor it was given here (set in __init__, read by each call):
# django_thread.SyncToAsync replaces it with a property, to hand out its own pool.
ASGIREF_EXECUTOR = "_executor"


def in_its_contexts_own_thread() -> bool:
    """Whether the calling thread is the one asgiref made for the current
    ``ThreadSensitiveContext``, which Django's ASGI handler enters per request: the
    thread is joined as the context ends, so nothing else will run in it. (The stdlib
    lists the thread just after starting it: the context's first call may run before.)"""
    context = SyncToAsync.thread_sensitive_context.get(None)
    if context is None:
        return False
    executor = SyncToAsync.context_to_thread_executor.get(context)
    return threading.current_thread() in getattr(executor, "_threads", ())


# --- Django's connections ----------------------------------------------------------------


def registry() -> threading.local | None:
    """Django's per-thread registry of wrappers, when it is a plain ``threading.local``.

    asgiref's ``Local`` keeps thread-critical values (Django's connections) there, one
    attribute per alias used; None means read ``connections.all()`` instead.
    """
    storage = getattr(getattr(connections, "_connections", None), "_storage", None)
    return storage if type(storage) is threading.local else None


def owner_ident(conn: BaseDatabaseWrapper) -> int | None:
    """The ident of the thread that made *conn* (Django's ``_thread_ident``)."""
    ident: int | None = getattr(conn, "_thread_ident", None)
    return ident


# Django's flag for "no ping before the next query" (CONN_HEALTH_CHECKS), not typed in
# django-stubs.
HEALTH_CHECK_DONE = "health_check_done"


def forget_atomic_blocks(conn: BaseDatabaseWrapper) -> None:
    """Forget abandoned ``atomic()`` blocks, so that ``close()`` really closes.

    Inside ``atomic()`` Django only marks the connection to be closed; the next
    ``connect()`` then starts clean too.
    """
    conn.in_atomic_block = False
    conn.atomic_blocks = []
    conn.savepoint_ids = []
    conn.needs_rollback = False
    conn.closed_in_transaction = False


# django_thread.backends (_keep.KeepMixin) overrides two steps of Django's wrapper:
# - close() lets go of the raw connection in _close() only (sqlite3's close() too), and
#   forgets it (connection = None) whatever _close() did;
# - connect() sets close_at *before* get_new_connection() and leaves what it sets, and
#   is_usable() pings self.connection.


# --- django.tasks ---------------------------------------------------------------------


def set_return_value(result: Any, value: Any) -> None:
    """Store a task's return value on its (frozen) ``TaskResult``, as Django's backends do."""
    object.__setattr__(result, "_return_value", value)


# --- psycopg 3 --------------------------------------------------------------------------


def forget_prepared_statements(raw: Any) -> None:
    """After a ``DISCARD ALL`` on *raw*: forget the statements psycopg prepared.

    psycopg looks at the result of a query text only the first time it runs it: on a
    connection reset once before, it would go on using statements the server dropped.
    """
    raw._prepared.clear()  # as psycopg does when it sees DISCARD ALL (DEALLOCATE ALL next)


# --- mysqlclient ----------------------------------------------------------------------


@functools.cache
def _mysql_reset() -> Any:
    # mysqlclient does not expose mysql_reset_connection() (COM_RESET_CONNECTION: no new
    # login, unlike change_user()); the C library it is linked with has it (MariaDB
    # Connector/C 3.0+, libmysqlclient 5.7+). A library without it: nothing is kept.
    from MySQLdb import _mysql  # noqa: PLC0415 - imported with the backend anyway

    reset = ctypes.CDLL(_mysql.__file__).mysql_reset_connection
    reset.argtypes = [ctypes.c_void_p]
    reset.restype = ctypes.c_int
    # Our own prototype: setting argtypes on ctypes.pythonapi's would change everyone's.
    prototype = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)
    pointer = prototype(("PyCapsule_GetPointer", ctypes.pythonapi))
    return reset, pointer


def can_reset_mysql_sessions() -> bool:
    """Whether the C library mysqlclient is linked with has mysql_reset_connection()."""
    try:
        _mysql_reset()
    except AttributeError:  # ctypes: no such symbol
        return False
    return True


def reset_mysql_session(raw: Any) -> None:
    """Reset *raw*'s server session as a new one's, or raise (the caller closes it).

    ``Connection._get_native_connection()``, the capsule of the C library's ``MYSQL*``.
    """
    reset, pointer = _mysql_reset()
    native = pointer(raw._get_native_connection(), b"_mysql.connection.native_connection")
    if reset(native):
        msg = f"mysql_reset_connection() failed: {raw.error() or 'no message'}"
        raise ConnectionError(msg)
