"""A :mod:`django.tasks` backend that runs tasks on django-thread's thread pool (Django 6.0+).

.. code-block:: python

    TASKS = {
        "default": {
            "BACKEND": "django_thread.tasks.ThreadPoolBackend",
            "QUEUES": ["default", "emails"],
            "OPTIONS": {"MAX_WORKERS": 8, "MAX_RESULTS": 1000,
                        "ENQUEUE_ON_COMMIT": True, "SHUTDOWN_TIMEOUT": 30},
        }
    }

Each task is one unit of work on a :class:`django_thread.ThreadPoolExecutor`: its
connections follow ``CONN_MAX_AGE`` / ``CONN_HEALTH_CHECKS`` and are closed when the
worker exits. Tasks and results live in this process's memory only.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import math
import operator
import threading
import uuid
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from traceback import format_exception
from typing import TYPE_CHECKING, Any, ParamSpec, TypeAlias, TypeVar

import django

if django.VERSION < (6, 0):  # pragma: no cover - exercised on Django 5.2 only
    msg = (
        "django_thread.tasks needs Django 6.0 or newer (it is a django.tasks backend); "
        f"this is Django {django.get_version()}. The rest of django_thread works on 5.2."
    )
    raise ImportError(msg)

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.dispatch import receiver
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
from django.tasks.exceptions import TaskException, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.utils import timezone
from django.utils.crypto import get_random_string
from django.utils.json import normalize_json

from django_thread import ThreadPoolExecutor, _compat, _limits
from django_thread._connections import next_unit

if TYPE_CHECKING:
    AnyResult: TypeAlias = TaskResult[..., Any]

_P = ParamSpec("_P")
_R = TypeVar("_R")
_Res = TypeVar("_Res", bound="AnyResult")

__all__ = ["BackendShutDownError", "ThreadPoolBackend"]

logger = logging.getLogger(__name__)

#: The defaults of ``OPTIONS``. ``MAX_WORKERS`` None is the stdlib pool's own default,
#: ``min(32, os.cpu_count() + 4)``; ``SHUTDOWN_TIMEOUT`` None waits for running tasks
#: however long they take; ``STATEMENT_TIMEOUT`` None sets no time limit.
DEFAULTS: dict[str, Any] = {
    "MAX_WORKERS": None,
    "MAX_RESULTS": 1000,
    "ENQUEUE_ON_COMMIT": True,
    "SHUTDOWN_TIMEOUT": 30,
    "STATEMENT_TIMEOUT": None,
}


class BackendShutDownError(TaskException, RuntimeError):
    """Raised by ``enqueue()`` once the backend's pool has been shut down."""


def validate_options(alias: str, options: object) -> dict[str, Any]:
    """*options* with the defaults filled in; ImproperlyConfigured naming the first problem."""

    def bad(name: str, why: str) -> ImproperlyConfigured:
        return ImproperlyConfigured(f"TASKS[{alias!r}]['OPTIONS'][{name!r}] {why}")

    if not isinstance(options, dict):
        msg = f"TASKS[{alias!r}]['OPTIONS'] must be a dict, not {type(options).__name__}"
        raise ImproperlyConfigured(msg)
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        known = ", ".join(DEFAULTS)
        raise bad(unknown[0], f"is not an option of ThreadPoolBackend (known: {known})")
    values = {**DEFAULTS, **options}
    workers = values["MAX_WORKERS"]
    # bool is an int: True workers is a typo, not a pool size.
    if workers is not None and (type(workers) is not int or workers < 1):
        raise bad("MAX_WORKERS", f"must be a whole number of at least 1 or None, not {workers!r}")
    results = values["MAX_RESULTS"]
    if type(results) is not int or results < 0:
        raise bad("MAX_RESULTS", f"must be a whole number of at least 0, not {results!r}")
    if type(values["ENQUEUE_ON_COMMIT"]) is not bool:
        raise bad(
            "ENQUEUE_ON_COMMIT", f"must be True or False, not {values['ENQUEUE_ON_COMMIT']!r}"
        )
    timeout = values["SHUTDOWN_TIMEOUT"]
    # inf would overflow the wait, NaN never compares: None is "as long as it takes".
    if timeout is not None and (
        type(timeout) not in (int, float) or not math.isfinite(timeout) or timeout < 0
    ):
        raise bad(
            "SHUTDOWN_TIMEOUT",
            f"must be a finite number of seconds (>= 0), or None to wait as long as "
            f"running tasks take, not {timeout!r}",
        )
    try:
        _limits.check(values["STATEMENT_TIMEOUT"])
    except (TypeError, ValueError) as exc:
        raise bad("STATEMENT_TIMEOUT", str(exc).replace("statement_timeout ", "")) from None
    return values


@dataclass(order=True)
class _Due:
    """A deferred task in the scheduler's heap: earliest ``run_after`` first."""

    when: datetime
    seq: int
    result_id: str = field(compare=False)


class _Workers(ThreadPoolExecutor):
    """The backend's pool, whose workers are daemon threads.

    Interpreter exit waits for every non-daemon thread, with no timeout: only a daemon
    worker lets a task still running after ``SHUTDOWN_TIMEOUT`` be cut off at exit.
    """

    def _adjust_thread_count(self) -> None:
        _compat.start_workers_as_daemons(self, super()._adjust_thread_count)


class _Pool:
    """What every backend instance of one alias shares: the pool, the queue, the results.

    Django makes one backend instance per thread; the work and the results must not be.
    Ready tasks wait in a heap of our own. Up to one :meth:`_drain` per worker is
    submitted to the executor, and each runs whichever ready task has the highest
    priority, one after the other, until none is left: the executor's FIFO never decides
    the order, and a busy pool costs no future, work item or wake-up per task. Each task
    is still a unit of work of its own (:func:`~django_thread._connections.next_unit`).

    Every task that is enqueued ends SUCCESSFUL or FAILED, or is logged with its id: a
    signal receiver that raises fails no other task, and stops no worker.
    """

    def __init__(
        self, alias: str, backend_class: type[ThreadPoolBackend], values: dict[str, Any]
    ) -> None:
        self.alias = alias
        self.backend_class = backend_class
        self.max_results: int = values["MAX_RESULTS"]
        self.shutdown_timeout: float | None = values["SHUTDOWN_TIMEOUT"]
        self.statement_timeout: float | None = values["STATEMENT_TIMEOUT"]
        self.executor = _Workers(
            max_workers=values["MAX_WORKERS"], thread_name_prefix=f"tasks-{alias}"
        )
        # Guards all below: enqueuers, workers, the scheduler and readers use it at once.
        # A plain Lock, entered in C per task (a Condition's "with" is two Python calls;
        # nothing re-enters it); the scheduler and shutdown() wait on a Condition on it.
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.results: dict[str, AnyResult] = {}
        self.finished: OrderedDict[str, None] = OrderedDict()  # oldest first
        self.ready: list[tuple[int, int, str]] = []  # (-priority, seq, id): a heap
        self.deferred: list[_Due] = []  # a heap
        self.running: dict[str, threading.Thread] = {}  # id: the worker running it
        self.seq = itertools.count()
        self.draining = 0  # _drain() calls submitted and not yet counted out
        self.max_draining = _compat.max_workers(self.executor)
        self.closed = False
        self.retired = False  # forgotten by a TASKS change: ends once idle
        self.scheduler: threading.Thread | None = None
        # Per worker thread: its id in TaskResult.worker_ids, and the task it runs.
        self.local = threading.local()

    # -- enqueueing (any thread) ----------------------------------------------------

    def add(self, result: _Res) -> _Res:
        """Make *result* known to get_result() and queue it (now, or when due).

        Returns a snapshot taken before any worker could change it.
        """
        # No worker knows the result yet: no lock to set it up and copy it. Storing it
        # is one dict operation, atomic on its own; shutdown() is checked again below.
        self._check_open(result)
        object.__setattr__(result, "enqueued_at", timezone.now())
        snapshot = _snapshot(result)
        self.results[result.id] = result
        # Sent before a worker can take the task, so task_enqueued always precedes
        # task_started, and outside the lock, so receivers cannot stall the workers.
        try:
            task_enqueued.send(self.backend_class, task_result=result)
        except Exception as exc:
            # As with Django's backends, the caller gets the receiver's exception; the
            # task never runs, and its result says why rather than staying READY.
            with self.lock:
                self._fail(result, exc)
            raise
        run_after = result.task.run_after
        with self.lock:
            if self.closed:  # shut down while the signal was being sent
                self._fail_unrun([result])
            elif run_after is not None and run_after > timezone.now():
                heapq.heappush(self.deferred, _Due(run_after, next(self.seq), result.id))
                self._ensure_scheduler()
                self.changed.notify_all()
                return snapshot
            else:
                self._make_ready(result)
                return snapshot
        self._log_unrun([result])
        return snapshot

    def add_on_commit(self, result: AnyResult) -> None:
        # Raising would tell the code that committed that its commit failed: say it.
        try:
            self.add(result)
        except BackendShutDownError:
            with self.lock:  # the caller holds its id: get_result() must know it
                self.results[result.id] = result
                self._fail_unrun([result])
            self._log_unrun([result])
        except Exception:
            logger.exception(
                "A task_enqueued receiver raised for task id=%s path=%s: it will not run",
                result.id,
                result.task.module_path,
            )

    def _check_open(self, result: AnyResult) -> None:
        if self.closed:
            msg = (
                f"Task backend {self.alias!r} has been shut down: "
                f"{result.task.module_path} was not enqueued"
            )
            raise BackendShutDownError(msg)

    def _make_ready(self, result: AnyResult) -> None:
        # Called with the lock held.
        heapq.heappush(self.ready, (-result.task.priority, next(self.seq), result.id))
        if self.draining < self.max_draining:  # else a running _drain() takes it
            self._start_drain()

    def _start_drain(self) -> None:
        # Called with the lock held, so the _drain() cannot count itself out before it
        # is counted in; and counted only once submit() has not raised.
        future = self.executor.submit(self._drain)
        self.draining += 1
        future.add_done_callback(self._drained)

    def _ensure_scheduler(self) -> None:
        if self.scheduler is None:
            # One thread for every deferred task; it never touches the database, so a
            # plain daemon thread: it must not keep the process alive.
            self.scheduler = threading.Thread(
                target=self._schedule, name=f"tasks-{self.alias}-scheduler", daemon=True
            )
            self.scheduler.start()

    def _schedule(self) -> None:
        with self.lock:
            while not self.closed:
                now = timezone.now()
                while self.deferred and self.deferred[0].when <= now:
                    due = heapq.heappop(self.deferred)
                    self._make_ready(self.results[due.result_id])
                wait = None
                if self.deferred:
                    # A run_after centuries away would overflow the wait (OverflowError).
                    wait = (self.deferred[0].when - now).total_seconds()
                    wait = min(wait, threading.TIMEOUT_MAX)
                self.changed.wait(wait)

    # -- running (pool workers) -----------------------------------------------------

    def _worker_id(self) -> str:
        worker_id: str | None = getattr(self.local, "id", None)
        if worker_id is None:
            worker_id = self.local.id = get_random_string(32)
        return worker_id

    def _drain(self) -> None:
        """One work item of the pool: run ready tasks, best first, until none is left."""
        sender = self.backend_class
        first = True
        while True:
            with self.lock:
                result = self._take_ready()
            if result is None:
                return
            try:
                # The previous task's unit of work ends here, this one's begins.
                next_unit(result.task.func, first=first, statement_timeout=self.statement_timeout)
                refused = None
            except Exception as exc:  # no turn on a test's shared connection, or ours
                refused = exc
            first = False
            self.local.task = result.id  # shutdown() from this thread: not waited for
            try:
                self._execute(sender, result, refused)
            except BaseException:  # KeyboardInterrupt: _execute() handled everything else
                with self.lock:
                    self._finish(result.id)
                raise  # _drained() counts this _drain() out
            finally:
                self.local.task = None

    def _take_ready(self) -> AnyResult | None:
        # Called with the lock held: the best ready task, marked running, or None (and
        # this _drain() counted out) when none is left or shutdown() drained them.
        if not self.ready:
            self.draining -= 1
            if self.retired and not self.draining and not self.deferred:
                self._retire_now()
            return None
        _, _, result_id = heapq.heappop(self.ready)
        result = self.results[result_id]
        started = timezone.now()
        object.__setattr__(result, "status", TaskResultStatus.RUNNING)
        object.__setattr__(result, "started_at", started)
        object.__setattr__(result, "last_attempted_at", started)
        result.worker_ids.append(self._worker_id())
        self.running[result_id] = threading.current_thread()
        return result

    def _drained(self, future: Future[None]) -> None:
        # A _drain() that returned counted itself out. One that raised, was cancelled by
        # shutdown(), or never ran (refused a turn on a test's shared connection) did
        # not: count it out here, and hand what it left to a new one.
        if not future.cancelled() and future.exception() is None:
            return
        with self.lock:
            self.draining -= 1
            if self.ready and not self.closed:
                self._start_drain()
            elif self.retired and not self.draining and not self.deferred:
                self._retire_now()

    def _execute(
        self, sender: type[ThreadPoolBackend], result: AnyResult, refused: Exception | None
    ) -> None:
        # The body of Django's ImmediateBackend._execute_task, run in the worker; the
        # outcome is stored under the lock, so get_result() never sees half of it.
        task = result.task
        try:
            # A raising task_started receiver stops the task, as in Django's backends:
            # here, that is the task's error.
            task_started.send(sender=sender, task_result=result)
            if refused is not None:  # the task could not start: that is its error
                raise refused
            if task.takes_context:
                raw = task.call(TaskContext(task_result=result), *result.args, **result.kwargs)
            else:
                raw = task.call(*result.args, **result.kwargs)
            value = normalize_json(raw)
        except KeyboardInterrupt:
            raise
        except BaseException as e:
            with self.lock:
                self._fail(result, e)
            # Sent inside the except block, as Django does: its receiver logs exc_info.
            self._send_finished(sender, result)
        else:
            with self.lock:
                _compat.set_return_value(result, value)
                object.__setattr__(result, "finished_at", timezone.now())
                object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
                self._finish(result.id)
            self._send_finished(sender, result)

    def _send_finished(self, sender: type[ThreadPoolBackend], result: AnyResult) -> None:
        # Django's backends let this exception reach the enqueuer; here there is none.
        # The outcome is stored already: log, and go on to the next task.
        try:
            task_finished.send(sender, task_result=result)
        except Exception:
            logger.exception(
                "A task_finished receiver raised for task id=%s path=%s",
                result.id,
                result.task.module_path,
            )

    def _fail(self, result: AnyResult, exc: BaseException) -> None:
        # Called with the lock held.
        exception_type = type(exc)
        object.__setattr__(result, "finished_at", timezone.now())
        result.errors.append(
            TaskError(
                exception_class_path=f"{exception_type.__module__}.{exception_type.__qualname__}",
                traceback="".join(format_exception(exc)),
            )
        )
        object.__setattr__(result, "status", TaskResultStatus.FAILED)
        self._finish(result.id)

    def _finish(self, result_id: str) -> None:
        # Called with the lock held, in the same section that stores the outcome.
        self.running.pop(result_id, None)
        self.finished[result_id] = None
        self._evict()
        if self.closed:  # only shutdown() waits for running tasks to end
            self.changed.notify_all()

    def _evict(self) -> None:
        # Only finished results are dropped, oldest first: a queued or running task's
        # result must stay retrievable whatever the bound.
        while len(self.results) > self.max_results and self.finished:
            oldest, _ = self.finished.popitem(last=False)
            self.results.pop(oldest, None)

    # -- reading (any thread) ---------------------------------------------------------

    def get(self, result_id: str) -> AnyResult:
        with self.lock:
            try:
                stored = self.results[result_id]
            except KeyError:
                raise TaskResultDoesNotExist(result_id) from None
            return _snapshot(stored)

    # -- stopping -------------------------------------------------------------------

    def _fail_unrun(self, results: list[AnyResult]) -> None:
        # Called with the lock held. FAILED is Django's status for "unable to start".
        for result in results:
            object.__setattr__(result, "status", TaskResultStatus.FAILED)
            object.__setattr__(result, "finished_at", timezone.now())
            result.errors.append(
                TaskError(
                    exception_class_path=f"{__name__}.BackendShutDownError",
                    traceback=f"{__name__}.BackendShutDownError: task backend {self.alias!r} "
                    "was shut down before the task ran\n",
                )
            )
            self.finished[result.id] = None
        self._evict()

    def _log_unrun(self, results: list[AnyResult]) -> None:
        for result in results:
            logger.warning(
                "Task id=%s path=%s did not run: task backend %r was shut down",
                result.id,
                result.task.module_path,
                self.alias,
            )

    def retire(self) -> None:
        """Forgotten by a TASKS change: run what was enqueued, then let the workers go."""
        with self.lock:
            self.retired = True
            if not self.draining and not self.deferred:
                self._retire_now()

    def _retire_now(self) -> None:
        # Called with the lock held, with nothing queued or running. Idle workers then
        # exit at once and close their connections; nothing waits for them.
        self.closed = True
        self.executor.shutdown(wait=False)

    def shutdown(self, *, at_exit: bool = False) -> None:
        # A task (or a task_finished receiver) may call this: its own worker is not
        # waited for, nor joined.
        own = getattr(self.local, "task", None)
        in_worker = getattr(self.local, "id", None) is not None
        with self.lock:
            if self.closed:
                return
            self.closed = True
            not_run = [self.results[rid] for _, _, rid in self.ready]
            not_run += [self.results[due.result_id] for due in self.deferred]
            self.ready.clear()
            self.deferred.clear()
            self.changed.notify_all()  # wakes the scheduler, which exits
            self._fail_unrun(not_run)
            timed_out = not self.changed.wait_for(
                lambda: self.running.keys() <= {own}, timeout=self.shutdown_timeout
            )
            still_running = {rid: thread for rid, thread in self.running.items() if rid != own}
        self._log_unrun(not_run)
        if timed_out:
            for rid, thread in still_running.items():
                if at_exit:  # a daemon thread: it dies with the process
                    _compat.forget_worker(thread)
                logger.warning(
                    "Task id=%s path=%s %s after SHUTDOWN_TIMEOUT=%ss",
                    rid,
                    self.results[rid].task.module_path,
                    "cut off at exit, its transaction rolled back," if at_exit else "still running",
                    self.shutdown_timeout,
                )
        # Nothing is queued any more, so idle workers exit at once and close their
        # connections; with timed_out, busy ones do when their task returns.
        self.executor.shutdown(wait=not (timed_out or in_worker), cancel_futures=True)


# Every field, _return_value (init=False) included, but the two lists, copied apart.
_RESULT_SLOTS = tuple(
    f.name for f in dataclasses.fields(TaskResult) if f.name not in ("errors", "worker_ids")
)
_read_slots = operator.attrgetter(*_RESULT_SLOTS)
_set = object.__setattr__  # TaskResult is frozen


def _snapshot(result: _Res) -> _Res:
    """A copy the caller may keep: the stored result goes on changing in the worker.

    Built slot by slot, all read in one call: copy.copy() goes through dataclasses'
    getstate/setstate, which cost more than the rest of an enqueue().
    """
    clone = object.__new__(type(result))
    for name, value in zip(_RESULT_SLOTS, _read_slots(result), strict=True):
        _set(clone, name, value)
    _set(clone, "errors", list(result.errors))
    _set(clone, "worker_ids", list(result.worker_ids))
    return clone


def _new_id() -> str:
    # 32 random hex digits, from os.urandom like Django's get_random_string(32), whose
    # 32 SystemRandom.choice() calls were half the CPU time of running a no-op task.
    return uuid.uuid4().hex


# Django makes a backend per thread: their first uses, at once, must find one pool.
_registry_lock = threading.Lock()
_pools: dict[str, _Pool] = {}
_every_pool: list[_Pool] = []  # also those forgotten by a TASKS change, for exit


def _pool_for(alias: str, backend_class: type[ThreadPoolBackend], values: dict[str, Any]) -> _Pool:
    with _registry_lock:
        pool = _pools.get(alias)
        if pool is None:
            pool = _pools[alias] = _Pool(alias, backend_class, values)
            _every_pool.append(pool)
        return pool


@receiver(setting_changed)
def _forget_pools(*, setting: str, **kwargs: Any) -> None:
    # Django drops its backend instances when TASKS changes (override_settings); the
    # next instances then get
    # new pools with the new OPTIONS. The old ones run what they hold, then their
    # workers exit and close their connections.
    if setting == "TASKS":
        with _registry_lock:
            forgotten = list(_pools.values())
            _pools.clear()
        for pool in forgotten:
            pool.retire()


def _shutdown_all() -> None:
    with _registry_lock:
        pools = list(_every_pool)
    for pool in pools:
        pool.shutdown(at_exit=True)


# The stdlib's pool joins its workers from threading's exit hooks, with no timeout, and
# would first run every queued task. Ours must stop the queue and let go of the workers
# still running after SHUTDOWN_TIMEOUT first.
_compat.register_before_pools_join(_shutdown_all)


class ThreadPoolBackend(BaseTaskBackend):
    """Runs tasks in this process, each as one unit of work of a shared thread pool.

    ``OPTIONS`` (all optional): ``MAX_WORKERS`` (default None: the stdlib's
    ``min(32, cpu_count + 4)``), ``MAX_RESULTS`` (1000 results kept; the oldest
    finished ones are dropped first), ``ENQUEUE_ON_COMMIT`` (True: an enqueue inside
    ``atomic()`` on the default database is handed to the pool when the outermost
    block commits, and never if it rolls back), ``SHUTDOWN_TIMEOUT`` (30 seconds
    that :meth:`shutdown` waits for running tasks; None waits as long as they take)
    and ``STATEMENT_TIMEOUT`` (None: each task's statements run without a time limit
    the database enforces, as ``unit_of_work(statement_timeout=...)`` would set).
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        values = validate_options(alias, self.options)
        self.enqueue_on_commit: bool = values["ENQUEUE_ON_COMMIT"]
        self._pool = _pool_for(alias, type(self), values)

    def enqueue(
        self, task: Task[_P, _R], args: list[Any], kwargs: dict[str, Any]
    ) -> TaskResult[_P, _R]:
        self.validate_task(task)
        pool = self._pool
        result: TaskResult[_P, _R] = TaskResult(
            task=task,
            id=_new_id(),
            status=TaskResultStatus.READY,
            enqueued_at=None,
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=list(args),
            kwargs=kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        pool._check_open(result)
        # Checked before on_commit(), which would open a connection to ask the
        # server for its autocommit state: enqueueing must not touch the database.
        if self.enqueue_on_commit and connections[DEFAULT_DB_ALIAS].in_atomic_block:
            transaction.on_commit(lambda: pool.add_on_commit(result), using=DEFAULT_DB_ALIAS)
            return _snapshot(result)
        return pool.add(result)

    def get_result(self, result_id: str) -> AnyResult:
        return self._pool.get(result_id)

    def shutdown(self) -> None:
        """Stop taking tasks, wait up to ``SHUTDOWN_TIMEOUT`` for running ones, log the rest.

        Shuts the pool of this alias down for every instance and thread. Tasks still
        queued or deferred are marked FAILED and logged (id and path) as not run.
        """
        self._pool.shutdown()
