"""The connection policy: what happens to a thread's Django connections, and when.

Django looks after connections only around HTTP requests: ``request_started`` and
``request_finished`` both call :func:`django.db.close_old_connections`, which lets
``CONN_MAX_AGE`` and ``CONN_HEALTH_CHECKS`` do their work. This module applies the
same policy to *units of work* in other threads, and adds what a request never
needs: closing everything when the thread itself ends.

The rules, each a small function below:

- **Outer units tidy, inner units don't.** A pool task, a Django request and the
  outermost ``unit_of_work`` in a thread are outer units. A unit entered inside one of
  them changes nothing: the caller's connection, transaction and query log are the
  caller's (:func:`is_inner`).
- **Never touch a transaction the unit did not open.** Connections in ``atomic()`` or
  with autocommit off when an outer unit begins belong to its caller; the unit leaves
  them alone at both ends (:func:`begin_unit`, :func:`end_unit`).
- **A transaction the unit opened and left open is rolled back and its connection
  closed,** with an ERROR naming the unit, as the end of a request drops it: it is never
  handed to the next unit (:func:`_drop_left_open`).
- **A connection whose set-up failed half-way is closed** as the unit that opened it
  ends: Django never announced it, and counts it as healthy (:func:`close_half_open`).
- **At thread exit, close everything** the thread opened, whatever ``CONN_MAX_AGE``
  says, except connections shared with other threads (:func:`close_thread_connections`).
  Our threads do it as their last step; any other thread that ran a unit of work or
  connected with a ``django_thread.backends`` ENGINE, or any thread at all when the
  ``django_thread`` app is installed, does it as its thread-local state is torn down
  (:meth:`_ThreadExit.__del__`).
- **One lifecycle for every unit** (:func:`begin`, :func:`end`, :func:`step`,
  :func:`exit_thread`): a pool task runs from the worker's read of its work item to its next
  read of the queue, and what named the unit (the work item, with the task's function,
  arguments and future) is let go as it ends, as the stdlib's worker lets go of it.
- **Settings are read and validated where the user calls** (:func:`read_settings`):
  nothing of ours raises inside a stdlib worker loop.

Every function acts on the *calling* thread's connections only, because
``django.db.connections`` is thread-local: nothing here runs in the thread that
started or submitted the work.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from contextlib import ContextDecorator
from importlib.metadata import PackageNotFoundError, version
from types import FrameType, TracebackType
from typing import Any, Protocol, TypeVar, cast, overload

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import request_finished, request_started, setting_changed
from django.db import NotSupportedError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from django_thread import _compat, _limits

logger = logging.getLogger("django_thread")


def docs_version(distribution: str = "django-thread") -> str:
    """The Read the Docs version whose docs describe the installed *distribution*.

    Read the Docs builds each release's tag (named as the version, e.g. ``0.2.0``), so a
    release's messages link to the docs of the code that raised them, not to what
    ``latest`` (main) says since. A development build (``.dev``, a local ``+`` part) or
    a source tree never installed has no tag: ``latest`` is the nearest there is.
    """
    try:
        installed = version(distribution)
    except PackageNotFoundError:
        return "latest"
    return "latest" if "dev" in installed or "+" in installed else installed


DOCS_URL = f"https://django-thread.readthedocs.io/en/{docs_version()}/"
CHECKS_URL = f"{DOCS_URL}reference/checks.html"


# --- each thread's record ----------------------------------------------------------

_NO_CALLERS: AbstractSet[int] = frozenset()


class _ThreadRecord:
    """Everything django_thread knows about one thread, kept in a thread-local."""

    __slots__ = (
        "aliases_seen",
        "callers",
        "close_at_exit",
        "ended_at",
        "limits",
        "managed",
        "pool",
        "requests",
        "shared",
        "unit",
        "units",
        "wrappers",
    )

    def __init__(self) -> None:
        # id -> weak reference to each wrapper this thread connected. Weak, so that a
        # wrapper the user dropped is freed as without us (gc.collect() closes it).
        self.wrappers: dict[int, weakref.ref[BaseDatabaseWrapper]] = {}
        # The outer unit running in this thread (None: none is), as begin() was told
        # to name it: a pool task's work item, a function, a name or a frame. Let go
        # of as the unit ends, which frees a task's function, arguments and future.
        self.unit: Any = None
        # Ids of the connections inside a transaction the unit's caller opened.
        self.callers: AbstractSet[int] = _NO_CALLERS
        self.shared: SharedUnit | None = None  # a test's connection lent to the unit
        # Per unit_of_work block open: whether it is outer, whether it set a time limit.
        self.units: list[tuple[bool, bool]] = []
        self.limits: list[_Limit] = []  # the time limits in force, innermost last
        self.requests = 0  # Django requests in progress in this thread
        self.close_at_exit = False
        self.managed = False  # one of our threads or pool workers: also advised
        # A pool worker's queue (DRAINING while a task drains a queue in shutdown()):
        # only reads by the worker loop of that very queue mark unit boundaries.
        self.pool: object | None = None
        self.aliases_seen: set[str] = set()
        # id(wrapper) -> when its last outer unit ended cleanly (HEALTH_CHECK_WINDOW).
        self.ended_at: dict[int, float] = {}

    def connected(self) -> list[BaseDatabaseWrapper]:
        """The wrappers this thread opened that are still alive, forgetting the rest."""
        alive = []
        for key, ref in list(self.wrappers.items()):
            conn = ref()
            if conn is None or conn.connection is None:
                del self.wrappers[key]  # freed, or closed: connecting again re-adds it
                self.ended_at.pop(key, None)
            else:
                alive.append(conn)
        return alive


class _ThreadExit:
    """Closes a thread's connections when the thread ends.

    It lives in a thread-local and nowhere else, so CPython drops it when the thread
    ends, in that thread, before ``join()`` returns: its ``__del__`` is our thread-exit
    hook for threads we did not create. (The record itself may outlive the thread, say
    in a traceback's frame, so it cannot be the hook.)
    """

    __slots__ = ("rec",)

    def __init__(self, rec: _ThreadRecord) -> None:
        self.rec = rec

    def __del__(self) -> None:
        # The thread is ending, or the interpreter is. Django's own thread-local may
        # already be gone, which is why the wrappers are ours to find.
        rec = self.rec
        if rec.close_at_exit and rec.wrappers and not sys.is_finalizing():
            close_thread_connections(rec)


_local = threading.local()


def record(*, new_thread: bool = False) -> _ThreadRecord:
    """The calling thread's record, made on first use.

    *new_thread*: the caller knows the thread has just started, so it has opened
    nothing yet and there is nothing to adopt (saves a look at Django's registry).
    """
    try:
        rec: _ThreadRecord = _local.record
    except AttributeError:
        rec = _local.record = _ThreadRecord()
        _local.exit = _ThreadExit(rec)
        thread = threading.current_thread()
        if hasattr(thread, _OURS):
            # One of our Threads, made lazily at its first connect: everything it
            # opened announced itself, except a half-way connect the end sweeps.
            rec.managed = rec.close_at_exit = True
            setattr(thread, _OURS, rec)
        elif not new_thread:
            # Adopt what this thread opened before django_thread was imported.
            for conn in connections.all(initialized_only=True):
                if conn.connection is not None:
                    rec.wrappers[id(conn)] = weakref.ref(conn)
    return rec


# On a django_thread.Thread whose run() runs in its own thread: None, then its record.
# Our Threads make their record only when they first connect (or enter a unit), and
# find it here as they end rather than in the thread-local, whose first use in a
# thread costs as much again: a thread that never connects costs next to nothing.
_OURS = "_django_thread_record"


def current_record() -> _ThreadRecord | None:
    """The calling thread's record if it has one: the cheap question for hot paths."""
    return getattr(_local, "record", None)


# --- settings ----------------------------------------------------------------------

#: Every key of the ``DJANGO_THREAD`` setting, with its default.
SETTINGS_DEFAULTS: dict[str, Any] = {"HEALTH_CHECK_WINDOW": 0, "SYNC_TO_ASYNC_MAX_WORKERS": None}

_UNREAD = -1.0
_window = _UNREAD  # HEALTH_CHECK_WINDOW, validated once, read again when settings change


def settings_problems(value: object) -> list[str]:
    """What is wrong with a ``DJANGO_THREAD`` setting; empty when nothing is."""
    if not isinstance(value, dict):
        return [f"DJANGO_THREAD must be a dict, not {type(value).__name__}."]
    problems = [
        f"DJANGO_THREAD has no key {key!r}; the keys are: {', '.join(SETTINGS_DEFAULTS)}."
        for key in value
        if key not in SETTINGS_DEFAULTS
    ]
    problem = window_problem(value.get("HEALTH_CHECK_WINDOW", 0))
    if problem:
        problems.append(problem)
    workers = value.get("SYNC_TO_ASYNC_MAX_WORKERS")
    if workers is not None and (type(workers) is not int or workers < 1):
        problems.append(
            'DJANGO_THREAD["SYNC_TO_ASYNC_MAX_WORKERS"] must be a whole number of at least '
            f"1, or None for the stdlib pool's default, not {workers!r}."
        )
    return problems


def window_problem(value: object) -> str | None:
    """What is wrong with a HEALTH_CHECK_WINDOW value, or None."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value < math.inf  # NaN fails too
    ):
        return (
            'DJANGO_THREAD["HEALTH_CHECK_WINDOW"] must be a number of seconds, 0 or '
            f"more (0 turns it off), not {value!r}."
        )
    return None


def read_settings() -> float:
    """Validate ``DJANGO_THREAD`` and return the health-check window in seconds.

    Called where the user calls (a pool's construction, ``Thread.start()``,
    ``unit_of_work``'s entry), so that a bad value is an error there; cheap once read.
    """
    global _window  # noqa: PLW0603 - a cache, reset by setting_changed
    if _window == _UNREAD:
        value = getattr(settings, "DJANGO_THREAD", None)
        problems = settings_problems({} if value is None else value)
        if problems:
            raise ImproperlyConfigured(" ".join(problems))
        _window = float(cast("dict[str, Any]", value or {}).get("HEALTH_CHECK_WINDOW", 0))
    return _window


def window_in_worker() -> float:
    """The window as a worker reads it between two tasks: never raises.

    A setting that turned bad after the pool was made was reported to whoever made
    it bad (the system check, the next pool or unit): the worker carries on without
    the window, which is Django's own behaviour.
    """
    if _window != _UNREAD:
        return _window
    try:
        return read_settings()
    except ImproperlyConfigured:
        return 0.0


def _settings_changed(setting: str, **kwargs: Any) -> None:
    global _window  # noqa: PLW0603
    if setting == "DJANGO_THREAD":
        _window = _UNREAD


setting_changed.connect(_settings_changed, weak=False, dispatch_uid="django_thread")


# --- the unit lifecycle ------------------------------------------------------------
#
# begin(), end(), step() and exit_thread() are the only code that touches a thread's
# connections at a boundary; unit_of_work, the pool's queue, django.tasks and Thread
# each call them. Only begin() raises (no turn on a test's shared connection): tidying
# never replaces a unit's own result or exception.


def begin(
    rec: _ThreadRecord, what: Any, *, tidy: bool = True, statement_timeout: float | None = None
) -> None:
    """An outer unit, named by *what*, begins: tidy as a request's start does.

    Then, under a test's ``share_connections()``, take its connection, and set the
    unit's *statement_timeout* (seconds) on every connection it uses.
    """
    seconds = None if statement_timeout is None else _limits.check(statement_timeout)
    callers = begin_unit(rec) if tidy and rec.wrappers else _NO_CALLERS
    shared = begin_shared(functools.partial(describe, what)) if sharing else None
    if seconds is not None:
        try:
            push_limit(rec, seconds)
        except BaseException:
            end_shared(shared)
            raise
    rec.unit, rec.callers, rec.shared = what, callers, shared


def end(rec: _ThreadRecord) -> None:
    """The outer unit ends: tidy as a request's finish does, and let go of the unit."""
    shared, rec.shared = rec.shared, None
    try:
        while rec.limits:  # before a shared connection goes back to its test
            pop_limit(rec)
        if shared is not None:
            shared.end()
        if rec.wrappers:
            end_unit(rec, functools.partial(describe, rec.unit), rec.callers)
        elif _registry is None or vars(_registry):  # the thread used Django's registry
            close_half_open(rec)  # a connect of its may have failed half-way
    except Exception:
        logger.exception("django_thread: tidying after %s failed", describe(rec.unit))
    finally:
        rec.unit, rec.callers = None, _NO_CALLERS


def step(rec: _ThreadRecord, what: Any, *, statement_timeout: float | None = None) -> None:
    """From the running outer unit straight to the next, as a busy pool worker goes."""
    seconds = None if statement_timeout is None else _limits.check(statement_timeout)
    if rec.wrappers and rec.shared is None and not sharing and not rec.callers:
        keep = False
        try:
            if rec.limits:
                # The same limit again (a queue's tasks usually share one): keep it set,
                # unless a pooled connection goes back to its pool in between.
                keep = (
                    len(rec.limits) == 1
                    and rec.limits[0].seconds == seconds
                    and not any(_pooled(conn) for conn, _, _ in rec.limits[0].saved)
                )
                while rec.limits and not keep:
                    pop_limit(rec)
            between_units(rec, functools.partial(describe, rec.unit))
        except Exception:
            logger.exception("django_thread: tidying after %s failed", describe(rec.unit))
        if keep:
            rec.limits[0].forget_closed()
        elif seconds is not None:
            push_limit(rec, seconds)
        rec.unit = what
    else:
        end(rec)
        begin(rec, what, statement_timeout=seconds)


def exit_thread(rec: _ThreadRecord | None) -> None:
    """The thread ends: close every connection it opened."""
    try:
        close_thread_connections(rec, sweep=True)
    except Exception:
        logger.exception("django_thread: closing a thread's connections failed")


def is_inner(rec: _ThreadRecord) -> bool:
    """Whether a unit entered now sits inside another one, and so changes nothing."""
    return rec.unit is not None or bool(rec.requests)


def describe(what: Any) -> str:
    """Name a unit for an error: a work item, a function, a name, or a ``with``'s frame."""
    if isinstance(what, str):
        return what
    if what is None:  # its begin() failed: the task ran only to raise that error
        return "a task that could not begin"
    if isinstance(what, FrameType):
        return f"a unit of work at {what.f_code.co_filename}:{what.f_lineno}"
    fn = _compat.work_item_function(what)
    name = getattr(fn, "__qualname__", None)
    return f"task {getattr(fn, '__module__', '?')}.{name}()" if name else f"task {fn!r}"


# --- adapters: our threads and pool workers ---------------------------------------

# rec.pool of a worker whose task drains a queue in shutdown(cancel_futures=True): still
# inside its task, but those reads are not its worker loop's.
DRAINING = object()


def thread_begins(thread: threading.Thread) -> SharedUnit | None:
    """One of our Threads starts its ``run()``, in its own thread.

    Its record is made at its first connect, so a thread that never connects costs
    next to nothing; under a test's ``share_connections()`` its ``run()`` is a unit.
    """
    setattr(thread, _OURS, None)
    name = f"thread {thread.name!r}"
    shared = begin_shared(lambda: name)
    if shared is not None:
        # run() holds the turn: the units inside it must be inner, as in a pool task,
        # or each would wait for that turn until share_connections() times out.
        record(new_thread=True).unit = name
    return shared


def thread_ends(thread: threading.Thread, shared: SharedUnit | None) -> None:
    """One of our Threads' ``run()`` returned or raised: close everything it opened."""
    end_shared(shared)
    rec = getattr(thread, _OURS, None)
    if rec is not None:
        rec.unit = None
    exit_thread(rec)


def worker_begins(pool: object) -> _ThreadRecord:
    """The calling thread is a new worker of *pool*, whose queue marks its units."""
    rec = record(new_thread=True)
    rec.managed = rec.close_at_exit = True
    rec.pool = pool
    return rec


def take_task(rec: _ThreadRecord, item: Any, *, busy: bool) -> None:
    """A worker took *item* from its queue: its unit begins, or (None) the worker exits.

    *busy*: straight from its last task, whose unit ends here too (step()). Never
    raises into the stdlib's worker loop, which would die and leave the futures queued
    behind it unresolved: what keeps the task from starting is its own error.
    """
    if item is None:
        if busy:
            end(rec)
        exit_thread(rec)
        return
    try:
        if busy:
            step(rec, item)
        else:
            begin(rec, item)
    except Exception as exc:
        _compat.make_work_item_raise(item, exc)


def next_unit(
    task: Callable[..., object], *, first: bool, statement_timeout: float | None = None
) -> None:
    """In a pool task that runs several tasks in turn, *task*'s unit begins here.

    ``django_thread.tasks`` runs its own queue this way. *first*: the pool task's own
    unit has just begun, so it is only named after *task* (and shared anew under a
    test's ``share_connections()``). *statement_timeout*: *task*'s time limit in
    seconds, as ``unit_of_work`` takes it. Raises what keeps *task* from starting.
    """
    seconds = _limits.check(statement_timeout)
    rec = current_record()
    if rec is None or rec.pool is None or rec.pool is DRAINING:
        return  # not run by a worker loop of ours
    if first:
        shared, rec.shared = rec.shared, None
        end_shared(shared)
        begin(rec, task, tidy=False, statement_timeout=seconds)
    else:
        step(rec, task, statement_timeout=seconds)


# --- time limits the database enforces --------------------------------------------


class _Limit:
    """One unit's time limit, and what it replaced on each connection it was set on."""

    __slots__ = ("depth", "saved", "seconds")

    def __init__(self, seconds: float, depth: int) -> None:
        self.seconds = seconds
        self.depth = depth
        # (wrapper, its connection when the limit was set, what was in force before)
        self.saved: list[tuple[BaseDatabaseWrapper, Any, Any]] = []

    def add(self, conn: BaseDatabaseWrapper, *, new: bool = False) -> None:
        """Set the limit on *conn*'s open connection. *new*: from connection_created."""
        raw = conn.connection
        try:
            saved = _limits.apply(conn, self.seconds, self.depth)
        except NotSupportedError:
            raise
        except Exception:
            if not new and (in_transaction(conn) or conn.allow_thread_sharing):
                raise  # the caller's connection: the unit cannot run on it as asked
            # Most likely dead: closed, it reconnects with the limit at its next query.
            # A new connection is closed too, so nobody uses it without the limit.
            _close(conn)
            if new:
                raise
            return
        self.saved.append((conn, raw, saved))

    def forget_closed(self) -> None:
        for conn, raw, saved in self.saved:
            if conn.connection is not raw:
                _limits.forget(conn, saved)
        self.saved = [entry for entry in self.saved if entry[0].connection is entry[1]]

    def put_back(self) -> None:
        """Restore each connection still open; one that fails is closed, if it can be."""
        for conn, raw, saved in reversed(self.saved):
            if conn.connection is not raw:
                # Closed during the unit (a reconnect has an entry of its own).
                _limits.forget(conn, saved)
                continue
            try:
                _limits.put_back(conn, saved)
            except Exception:
                logger.exception(
                    "django_thread: restoring the time limit on database %r failed", conn.alias
                )
                if not (in_transaction(conn) or conn.allow_thread_sharing):
                    _discard(conn)  # never hand a connection on with a limit not its own
        self.saved.clear()


def push_limit(rec: _ThreadRecord, seconds: float) -> None:
    """Set a unit's limit on the calling thread's open connections (and, through
    connection_created, on those it opens until :func:`pop_limit`)."""
    limit = _Limit(seconds, len(rec.limits))
    rec.limits.append(limit)
    try:
        for conn in list(registered_wrappers()):
            if getattr(conn, "connection", None) is not None:  # asgiref's store has none
                limit.add(conn)
    except BaseException:
        pop_limit(rec)
        raise


def pop_limit(rec: _ThreadRecord) -> None:
    """End the innermost limit: each connection gets back what it had before."""
    rec.limits.pop().put_back()


# --- unit_of_work ---------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


class UnitOfWork(ContextDecorator):
    """The context manager and decorator that :func:`unit_of_work` returns.

    One instance may be entered by many threads at once (a decorated function runs in
    every worker of a pool), so the state of each entry lives in the entering thread's
    record, never on the instance.
    """

    def __init__(self, name: str | None = None, statement_timeout: float | None = None) -> None:
        self.name = name
        self.statement_timeout = _limits.check(statement_timeout)

    def __enter__(self) -> None:
        read_settings()  # a bad setting is an error here, before anything is counted
        rec = record()
        rec.close_at_exit = True  # whoever made this thread, it closes what it opened
        outer = not is_inner(rec)
        seconds = self.statement_timeout
        if outer:
            close_half_open(rec)  # left by this thread's code before the unit
            # The frame names the with block.
            begin(rec, self.name or sys._getframe(1), statement_timeout=seconds)
        elif seconds is not None:
            push_limit(rec, seconds)  # an inner unit changes nothing else
        rec.units.append((outer, seconds is not None))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        rec = record()
        outer, limited = rec.units.pop()
        if outer:  # the outer unit: tidy, as a request's end does
            end(rec)
        elif limited:
            try:
                pop_limit(rec)
            except Exception:
                logger.exception("django_thread: restoring a time limit failed")

    def __call__(self, func: F) -> F:
        if inspect.iscoroutinefunction(func):
            msg = (
                f"unit_of_work cannot wrap the coroutine function {func.__qualname__}(): "
                "database work runs in a thread. Decorate the synchronous function you "
                "pass to sync_to_async() or asyncio.to_thread() instead."
            )
            raise TypeError(msg)
        unit = UnitOfWork(
            self.name or f"{func.__module__}.{func.__qualname__}()", self.statement_timeout
        )

        @functools.wraps(func)
        def run_as_unit(*args: Any, **kwargs: Any) -> Any:
            with unit:
                return func(*args, **kwargs)

        return cast("F", run_as_unit)


@overload
def unit_of_work(func: F, /) -> F: ...
@overload
def unit_of_work(
    *, name: str | None = None, statement_timeout: float | None = None
) -> UnitOfWork: ...
def unit_of_work(
    func: F | None = None, /, *, name: str | None = None, statement_timeout: float | None = None
) -> F | UnitOfWork:
    """Treat a block or a function as one unit of work, the way Django treats a request.

    Use it in threads this library does not create: each pass of a long-running loop,
    functions given to :func:`asyncio.to_thread` or another library's pool::

        while not stopping.is_set():
            with unit_of_work():
                process_next_batch()

        @unit_of_work
        def handle(message): ...

    The outermost unit in a thread resets the query log and closes obsolete or
    unusable connections when it begins (honouring ``CONN_MAX_AGE`` and arming
    ``CONN_HEALTH_CHECKS``), and tidies again when it ends, also when it raised. A
    transaction it opened and left open is rolled back, its connection closed, and an
    ERROR logged. It never touches a connection inside a transaction its caller opened,
    nor clears a query log being captured (``assertNumQueries``).

    A unit inside another one, inside a Django request or inside a task of our pool
    changes nothing: call decorated helpers from anywhere.

    The thread that ran a unit closes every connection it opened when it ends,
    whatever ``CONN_MAX_AGE`` says.

    :param func: the function to decorate, when used bare as ``@unit_of_work``.
    :param name: how errors name the unit; defaults to the decorated function's path,
        or the file and line of the ``with`` statement.
    :param statement_timeout: a time limit in seconds that the database enforces on
        each statement the unit runs, on every connection it uses (PostgreSQL
        ``statement_timeout`` and ``idle_in_transaction_session_timeout``, MariaDB
        ``max_statement_time``, MySQL ``max_execution_time``, SQLite a progress
        handler); each connection is put back as it was when the unit ends. A unit
        inside another one applies its own limit for its duration. 0 lifts any limit.
        With ``DISABLE_SERVER_SIDE_CURSORS`` (PgBouncer in transaction mode) it is set
        per transaction, and statements run in autocommit are not limited.
    """
    if func is None:
        return UnitOfWork(name, statement_timeout)
    given: object = func  # typed callers cannot pass anything else; others can
    if not callable(given):
        msg = f"unit_of_work() takes a function to decorate, not {type(given).__name__}"
        raise TypeError(msg)
    return UnitOfWork(name)(func)


# --- what Django tells us: connects and requests ----------------------------------


def _app_installed() -> bool:
    return apps.apps_ready and apps.is_installed("django_thread")


def _remember(sender: object, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    # connection_created is sent from connect(), in the thread that connects.
    rec = record()
    rec.connected()  # forget what was freed or closed, so nothing piles up
    rec.wrappers[id(connection)] = weakref.ref(connection)
    for limit in rec.limits:  # outermost first, each saving what the one before set
        limit.add(connection, new=True)
    # django_thread.backends' ENGINEs opt in too: their connections are given back there.
    if not rec.close_at_exit and (hasattr(connection, "close_at_thread_exit") or _app_installed()):
        rec.close_at_exit = True
    if rec.managed:
        _advise_on_reconnects(rec, connection)


connection_created.connect(_remember, weak=False, dispatch_uid="django_thread")


def _request_started(sender: object, **kwargs: Any) -> None:
    record().requests += 1


def _request_finished(sender: object, **kwargs: Any) -> None:
    rec = current_record()
    if rec is not None and rec.requests:
        rec.requests -= 1
        if not rec.requests and rec.close_at_exit and _compat.in_its_contexts_own_thread():
            # Under ASGI the request's thread is about to end: close (or give back to
            # django_thread.backends' keep) now, not after the client had its answer
            # and sent the next request, which would then open a connection of its own.
            exit_thread(rec)


# A request is an outer unit (Django tidies around it): a unit_of_work inside a view
# must leave the request's connections and query log alone.
request_started.connect(_request_started, weak=False, dispatch_uid="django_thread")
request_finished.connect(_request_finished, weak=False, dispatch_uid="django_thread")


_advised: set[str] = set()
_advised_lock = threading.Lock()  # check-then-add, safe without the GIL too


def _advise_on_reconnects(rec: _ThreadRecord, connection: BaseDatabaseWrapper) -> None:
    """Say once per alias when CONN_MAX_AGE = 0 makes our threads connect per unit.

    Correct, and Django's default, but each unit of work then pays a connect (several
    times the cost of a small query): threaded work wants persistent connections with
    health checks, or Django's native pool. The system check W001 says the same at
    start-up when the app is installed.
    """
    alias = connection.alias
    settings = connection.settings_dict
    reconnect = alias in rec.aliases_seen
    rec.aliases_seen.add(alias)
    if not reconnect or settings["CONN_MAX_AGE"] != 0 or settings["OPTIONS"].get("pool"):
        return
    with _advised_lock:
        if alias in _advised:
            return
        _advised.add(alias)
    logger.warning(
        "django_thread: database %r has CONN_MAX_AGE = 0, so every unit of work in a "
        "thread opens a new connection (django_thread.W001). For threaded work, set "
        "CONN_MAX_AGE = None with CONN_HEALTH_CHECKS = True, or use Django's native "
        "PostgreSQL pool; behind PgBouncer in transaction mode, 0 is right. "
        "See %s#django-thread-w001",
        alias,
        CHECKS_URL,
    )


# --- tidying one thread's connections ----------------------------------------------


def in_transaction(conn: BaseDatabaseWrapper) -> bool:
    """Whether *conn* is inside ``atomic()`` or has autocommit turned off.

    Django's close_if_unusable_or_obsolete() closes such a connection ("autocommit
    differs from the setting"), which silently loses the transaction.
    """
    return conn.in_atomic_block or (
        conn.connection is not None and conn.autocommit != conn.settings_dict["AUTOCOMMIT"]
    )


_CHECKED = _compat.HEALTH_CHECK_DONE


def begin_unit(rec: _ThreadRecord) -> set[int]:
    """Prepare this thread's connections for an outer unit, as a request start does.

    Returns the ids of the connections left alone because they are inside a
    transaction someone else opened: the unit's end must leave them alone too.
    """
    callers: set[int] = set()
    window = window_in_worker()
    for conn in rec.connected():
        if in_transaction(conn) or conn.allow_thread_sharing:
            callers.add(id(conn))  # someone else's transaction, or connection
            continue
        if not conn.force_debug_cursor:  # CaptureQueriesContext / assertNumQueries
            conn.queries_log.clear()  # what reset_queries() does
        _close_if_unusable_or_obsolete(conn)  # also arms the health check
        # health_check_done: Django's flag (4.1+) for "no ping before the next query".
        if window and conn.connection is not None and not getattr(conn, _CHECKED):
            ended = rec.ended_at.get(id(conn))
            if ended is not None and time.monotonic() - ended < window:
                # Used moments ago, with no error since: skip the ping, as HikariCP
                # does within its "alive bypass window".
                setattr(conn, _CHECKED, True)
    return callers


def end_unit(
    rec: _ThreadRecord, describe: Callable[[], str], callers: AbstractSet[int] = frozenset()
) -> None:
    """Tidy this thread's connections after an outer unit, as a request finish does.

    *describe* names the unit, for the error about a transaction it left open.
    """
    close_half_open(rec)
    window = window_in_worker()
    closed = False
    for conn in rec.connected():
        if id(conn) in callers or conn.allow_thread_sharing:
            continue
        errors = _tidy_after_unit(rec, conn, window, describe)
        if conn.connection is None:
            closed = True
        elif window and not errors:
            rec.ended_at[id(conn)] = time.monotonic()
    if closed:
        rec.connected()  # forget the ones now closed: the free path is "no wrappers"


def _tidy_after_unit(
    rec: _ThreadRecord, conn: BaseDatabaseWrapper, window: float, describe: Callable[[], str]
) -> bool:
    """Tidy one connection after an outer unit; whether the unit left an error on it.

    A transaction the unit left open is rolled back and the connection closed; otherwise
    Django's close_if_unusable_or_obsolete() decides, as at a request's finish.
    ``conn.connection`` is None afterwards if the connection was closed.
    """
    if in_transaction(conn):
        _drop_left_open(conn, describe())
        return False
    errors, raw = conn.errors_occurred, conn.connection
    _close_if_unusable_or_obsolete(conn)
    if errors:
        rec.ended_at.pop(id(conn), None)  # the next unit pings
    elif window and conn.connection is None and conn.settings_dict["OPTIONS"].get("pool"):
        with _returned_lock:  # given back to the pool; see _returned_at
            _returned_at[raw] = time.monotonic()
    return errors


def between_units(rec: _ThreadRecord, describe: Callable[[], str]) -> None:
    """End one outer unit and begin the next, when nothing can run in between.

    end_unit() then begin_unit() would tidy each connection twice with nothing in
    between; this tidies once and leaves each as the second pass would have (query
    log cleared, health check armed or skipped within the window). One pass over
    Django's registry finds half-way connects too. *describe* names the unit that ended.
    """
    window = window_in_worker()
    known = rec.wrappers
    seen = 0
    unannounced = closed = False
    for conn in registered_wrappers():
        if getattr(conn, "connection", None) is None:
            continue  # not connected, or asgiref's context store
        if id(conn) not in known:
            unannounced = True
            continue
        seen += 1
        if _only_arms_the_check(conn):  # what _carry_over() would do, without its calls
            if conn.queries_log and not conn.force_debug_cursor:
                conn.queries_log.clear()
            setattr(conn, _CHECKED, bool(window))
        else:
            closed |= not _carry_over(rec, conn, window, describe)
    if unannounced:
        close_half_open(rec)
    if seen != len(known):
        # A wrapper this thread opened that Django no longer lists (its settings were
        # replaced), or one closed or freed since: tidy what is still open.
        listed = {id(conn) for conn in registered_wrappers()}
        for conn in rec.connected():
            if id(conn) not in listed:
                closed |= not _carry_over(rec, conn, window, describe)
    if closed:
        rec.connected()  # forget the ones now closed: the free path is "no wrappers"


def _carry_over(
    rec: _ThreadRecord, conn: BaseDatabaseWrapper, window: float, describe: Callable[[], str]
) -> bool:
    """Take *conn* from one unit to the next (see between_units); False if it closed."""
    if conn.allow_thread_sharing:
        return True  # someone else's connection
    errors = _tidy_after_unit(rec, conn, window, describe)
    if conn.connection is None:
        return False
    if not conn.force_debug_cursor:  # CaptureQueriesContext / assertNumQueries
        conn.queries_log.clear()
    # Armed (no errors: the call above left it so; an error: it pinged, and the
    # next unit pings again, as the second call would have made it), or skipped:
    # used this very moment without an error, so well inside any window.
    setattr(conn, _CHECKED, bool(window) and not errors)
    return True


def _close_if_unusable_or_obsolete(conn: BaseDatabaseWrapper) -> None:
    """What close_old_connections() does per connection, for a connection not in a
    transaction (callers check :func:`in_transaction` first).

    One failure does not stop the others and never raises: cleanup must not replace
    the unit's own result or exception.
    """
    if _only_arms_the_check(conn):
        setattr(conn, _CHECKED, False)
        return
    try:
        conn.close_if_unusable_or_obsolete()
    except Exception:
        logger.exception("django_thread: closing database connection %r failed", conn.alias)


_DJANGOS_CLOSE_IF = BaseDatabaseWrapper.close_if_unusable_or_obsolete


def _only_arms_the_check(conn: BaseDatabaseWrapper) -> bool:
    """Whether Django's close_if_unusable_or_obsolete() would only arm the health check.

    Then it is not called: a busy worker's step costs 3% fewer instructions per
    persistent PostgreSQL task (callgrind, same run), above this machine's noise.
    tests/test_unit_of_work.py checks that tidying leaves a connection as Django's
    method does, state by state.
    """
    return not (
        conn.errors_occurred
        or conn.in_atomic_block
        or conn.autocommit != conn.settings_dict["AUTOCOMMIT"]
        or (conn.close_at is not None and time.monotonic() >= conn.close_at)
        or conn.allow_thread_sharing
        or type(conn).close_if_unusable_or_obsolete is not _DJANGOS_CLOSE_IF
    )


def _drop_left_open(conn: BaseDatabaseWrapper, what: str) -> None:
    """Roll back and close a transaction *what* opened and never ended.

    Nobody can commit it any more: handing the connection on would make the next unit's
    writes part of it, all lost when it is finally rolled back. Django's request end
    drops such a connection silently; we say so.
    """
    logger.error(
        "django_thread: %s ended with a transaction open on database %r; it was "
        "rolled back and the connection closed. Close every atomic() block, and "
        "restore autocommit after set_autocommit(False).",
        what,
        conn.alias,
    )
    _compat.forget_atomic_blocks(conn)
    _discard(conn)  # the server rolls back what the session had not committed


def close_thread_connections(rec: _ThreadRecord | None, *, sweep: bool = False) -> None:
    """Close every connection the calling thread opened, whatever ``CONN_MAX_AGE`` says.

    Called as a thread or pool worker ends. ``close_old_connections()`` is not enough
    there: it keeps young persistent connections open, and once the thread is gone
    nobody can reuse them. Django's connection objects sit in reference cycles, so their
    sockets would stay open until the cyclic garbage collector happens to run.

    *rec* is None for one of our threads that never connected successfully.
    *sweep* also closes the connections whose set-up failed half-way (see
    :func:`close_half_open`). Only a live thread can sweep: Django's thread-local may be
    gone in ``__del__``.
    """
    if sweep:
        close_half_open(rec)
    ident = threading.get_ident()
    for conn in rec.connected() if rec is not None else []:
        # Shared with other threads (LiveServerThread, share_connections()), or not
        # this thread's at all: the owner closes it.
        if conn.allow_thread_sharing or _compat.owner_ident(conn) not in (ident, None):
            continue
        if in_transaction(conn):
            _drop_left_open(conn, "a thread")
            continue
        _close(conn, thread_exit=True)
    if rec is not None:
        rec.wrappers.clear()


def _close(conn: BaseDatabaseWrapper, *, thread_exit: bool = False) -> None:
    # The thread is ending: django_thread.backends may keep a clean connection for
    # the next thread (only this close gives back; every other one really closes).
    close = getattr(conn, "close_at_thread_exit", None) if thread_exit else None
    try:
        (close or conn.close)()
    except Exception:
        logger.exception("django_thread: closing database connection %r failed", conn.alias)


def _pooled(conn: BaseDatabaseWrapper) -> bool:
    """Whether Django's close() gives *conn*'s session back to Django's native pool."""
    return bool(getattr(conn, "pool", None))


def _discard(conn: BaseDatabaseWrapper) -> None:
    """Close *conn* and end its server session, also one Django's native pool lent.

    Given back, a session keeps what was set on it outside a transaction: a unit's
    time limit whose put-back a rollback undid, or that could not be put back.
    psycopg_pool replaces a session returned closed.
    """
    if conn.connection is not None and _pooled(conn):
        try:
            conn.connection.close()
        except Exception:
            logger.exception("django_thread: closing database connection %r failed", conn.alias)
    _close(conn)


def close_half_open(rec: _ThreadRecord | None) -> None:
    """Close the calling thread's connections whose set-up failed half-way.

    Django's connect() opens the socket, then sets the session up (autocommit, time
    zone, role, isolation level), and only then sends ``connection_created``, which is
    how *rec* learns of a connection. If the server ends the session in between (a
    failover, a kill, an idle timeout on a stalled machine), or a set-up statement
    fails, connect() raises and the wrapper keeps an open connection nobody announced.
    Django counts it as healthy (a new connection is, so no health check pings it), and
    nothing closes it: every later query in the thread would meet it. Django's request
    cycle finds it by listing its registry; so does this, at the end of every outer
    unit (and the start of a ``unit_of_work``), so that it costs the unit whose connect
    failed and no other. Closed, not checked: a session half set up (without its role,
    time zone or isolation level) is of no use, and cannot hold a transaction.
    """
    known = rec.wrappers if rec is not None else {}
    for conn in registered_wrappers():
        if getattr(conn, "connection", None) is None or id(conn) in known:
            continue  # not connected, or announced: tidied as usual
        if conn.allow_thread_sharing or _compat.owner_ident(conn) != threading.get_ident():
            continue  # lent to this thread (share_connections(), LiveServerThread)
        _close(conn)


_registry = _compat.registry()


def registered_wrappers() -> Iterable[Any]:
    """Django's wrappers in the calling thread: ``connections.all(initialized_only=True)``.

    Read at every unit's end, so read from the registry itself: Django's call asks
    about every alias, and pays two caught exceptions for each one the thread never
    used. Among the values may be asgiref's context store, which has no ``connection``.
    """
    if _registry is None:  # pragma: no cover - the canary fails first
        return connections.all(initialized_only=True)
    return vars(_registry).values()


# --- sharing a test's connections (django_thread.testing) -------------------------


class SharedUnit(Protocol):
    """A unit of work running on a test's shared connections."""

    def end(self) -> None:
        """Give the thread its own connections back, and the next unit its turn."""


class Sharing(Protocol):
    """What an active ``django_thread.testing.share_connections()`` offers units."""

    def begin(self, describe: Callable[[], str]) -> SharedUnit | None:
        """Put the test's connections in this thread for one unit, if it applies."""


# The active share_connections(), if any: a list, so that hot paths test it cheaply.
sharing: list[Sharing] = []


def begin_shared(describe: Callable[[], str]) -> SharedUnit | None:
    # share_connections() may end in the test's thread between the test and the read.
    try:
        active = sharing[0]
    except IndexError:
        return None
    return active.begin(describe)


def end_shared(unit: SharedUnit | None) -> None:
    if unit is not None:
        unit.end()


# Django's native pool checks a connection as it hands it out, with psycopg_pool's
# "check" callback: check_pooled_connection() skips it for a connection one of our
# units gave back moments ago. Weak keys: the pool owns the raw connections.
_returned_at: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
# Workers write it and the pool's checker pops it, in other threads; a
# WeakKeyDictionary is not documented as safe for that.
_returned_lock = threading.Lock()


def check_pooled_connection(raw: Any) -> None:
    """psycopg_pool's ``check`` for Django's native pool, honouring the window.

    Use it as ``OPTIONS = {"pool": {"check": django_thread.check_pooled_connection}}``
    with ``DJANGO_THREAD = {"HEALTH_CHECK_WINDOW": ...}``, on Django 6.1 and newer
    (Django 5.2 and 6.0 pass their own ``check`` to the pool and refuse a second one:
    opening a connection fails with ``TypeError``, and the system check
    ``django_thread.E002`` says so). It skips the ping for a connection that a unit
    of work gave back to the pool less than the window ago without an error, and
    otherwise runs ``ConnectionPool.check_connection``, the check Django installs when
    ``CONN_HEALTH_CHECKS`` is on.
    """
    from psycopg_pool import ConnectionPool  # noqa: PLC0415 - only with the pool

    window = window_in_worker()
    if window:
        with _returned_lock:  # see _returned_at
            returned = _returned_at.pop(raw, None)
        if returned is not None and time.monotonic() - returned < window:
            return
    ConnectionPool.check_connection(raw)
