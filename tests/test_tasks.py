"""django_thread.tasks.ThreadPoolBackend: Django's task semantics, run on our pool.

Workers use their own connections, so every test commits for real (transaction=True)
and connection counts are read from the server.
"""

from __future__ import annotations

import asyncio
import logging
import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import django
import pytest

if django.VERSION < (6, 0):
    pytest.skip("django.tasks needs Django 6.0 or newer", allow_module_level=True)

from django.core.exceptions import ImproperlyConfigured
from django.db import connections, transaction
from django.tasks import TaskContext, TaskResult, TaskResultStatus, task, task_backends
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.utils import timezone
from pytest_django import Settings as SettingsWrapper

from django_thread import _connections
from django_thread.tasks import BackendShutDownError, ThreadPoolBackend
from tests.conftest import settle
from tests.faults import Killer, Outcome, idle_timeout
from tests.server import ServerProbe
from tests.testapp.models import Note
from tests.work import main_backend_ids, query, session_id, thread_name

pytestmark = pytest.mark.django_db(transaction=True)

BACKEND = "django_thread.tasks.ThreadPoolBackend"

# -- the tasks (Django requires module-level functions) ---------------------------------

GATE = threading.Event()
ORDER: list[str] = []
OUTCOMES: dict[str, Outcome] = {}


def write_note(text: str) -> str:
    Note.objects.create(text=text)
    return text


def fail(message: str) -> None:
    raise ValueError(message)


def wait_for_gate() -> None:
    GATE.wait(30)


def record(label: str) -> None:
    ORDER.append(label)


def pair() -> tuple[int, int]:
    return (1, 2)


def with_context(context: TaskContext[Any, Any], value: int) -> dict[str, Any]:
    return {"id": context.task_result.id, "attempt": context.attempt, "value": value}


def interrupt() -> None:
    raise KeyboardInterrupt


def leave_open(text: str) -> None:
    # A bug in a task: a transaction it never ends.
    transaction.set_autocommit(False)
    Note.objects.create(text=text)


async def add(a: int, b: int) -> int:
    return a + b


def timed_query(context: TaskContext[Any, Any], delay: float) -> None:
    time.sleep(delay)  # time passes before the task touches the database
    outcome = Outcome(thread_name(), session_id(), time.monotonic(), 0)
    OUTCOMES[context.task_result.id] = outcome
    try:
        query()
    finally:
        outcome.ended = time.monotonic()


# -- helpers ----------------------------------------------------------------------------

Configure = Callable[..., ThreadPoolBackend]


@pytest.fixture
def configure(settings: SettingsWrapper) -> Iterator[Configure]:
    """Point TASKS["default"] at our backend with *options*; shut it down afterwards."""
    made: list[ThreadPoolBackend] = []
    GATE.clear()
    ORDER.clear()
    OUTCOMES.clear()

    def configure(queues: list[str] | None = None, **options: Any) -> ThreadPoolBackend:
        params: dict[str, Any] = {"BACKEND": BACKEND, "OPTIONS": options}
        if queues is not None:
            params["QUEUES"] = queues
        settings.TASKS = {"default": params}
        backend = task_backends["default"]
        assert isinstance(backend, ThreadPoolBackend)
        made.append(backend)
        return backend

    yield configure
    GATE.set()
    for backend in made:
        backend.shutdown()


@pytest.fixture
def backend(configure: Configure) -> ThreadPoolBackend:
    return configure()


def wait_all(results: list[TaskResult[..., Any]], timeout: float = 120) -> None:
    """Refresh *results* until every one has finished."""
    deadline = time.monotonic() + timeout
    pending = list(results)
    while pending:
        assert time.monotonic() < deadline, f"{len(pending)} tasks never finished"
        for result in pending:
            result.refresh()
        pending = [r for r in pending if not r.is_finished]
        if pending:
            time.sleep(0.01)


def wait_logged(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 20) -> None:
    """Wait for *text* in the log: a task's outcome is stored before task_finished is sent,
    so a receiver's error is logged after the result is seen final."""
    deadline = time.monotonic() + timeout
    while text not in caplog.text:
        assert time.monotonic() < deadline, f"never logged: {text!r}"
        time.sleep(0.01)


def wait_running(result: TaskResult[..., Any]) -> None:
    deadline = time.monotonic() + 30
    while result.status != TaskResultStatus.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.005)
        result.refresh()


# -- the tests --------------------------------------------------------------------------


def test_thousand_tasks_write_rows_and_leave_no_connection(
    configure: Configure, probe: ServerProbe
) -> None:
    assert Note.objects.count() == 0  # the main thread's own connection: in the baseline
    baseline = probe.steady()
    backend = configure(MAX_WORKERS=8)
    job = task(write_note)
    results = [job.enqueue(f"note {i}") for i in range(1000)]
    assert all(r.status == TaskResultStatus.READY for r in results)
    wait_all(results)
    assert {r.status for r in results} == {TaskResultStatus.SUCCESSFUL}
    assert sorted(r.return_value for r in results) == sorted(f"note {i}" for i in range(1000))
    assert Note.objects.count() == 1000
    # Every result is retrievable by id, from any thread.
    ids = [r.id for r in results]
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(backend.get_result(i).id for i in ids))
    reader.start()
    reader.join()
    assert seen == ids
    backend.shutdown()
    assert settle(probe, baseline) == baseline, (
        baseline,
        probe.backend_ids(),
        threading.enumerate(),
    )


def test_higher_priority_first_fifo_within_one(configure: Configure) -> None:
    configure(MAX_WORKERS=1)
    blocker = task(wait_for_gate).enqueue()
    wait_running(blocker)  # the one worker is busy: everything else queues
    job = task(record)
    for label, priority in [("a0", 0), ("b10", 10), ("c-5", -5), ("d10", 10), ("e50", 50)]:
        job.using(priority=priority).enqueue(label)
    last = job.using(priority=-100).enqueue("last")
    GATE.set()
    wait_all([last])
    assert ORDER == ["e50", "b10", "d10", "a0", "c-5", "last"]


def test_run_after_defers_in_due_order(configure: Configure) -> None:
    configure(MAX_WORKERS=2)
    job = task(record)
    now = timezone.now()
    results = [
        job.using(run_after=now + timedelta(milliseconds=600)).enqueue("third"),
        job.using(run_after=now + timedelta(milliseconds=200)).enqueue("first"),
        job.using(run_after=now + timedelta(milliseconds=400)).enqueue("second"),
        job.enqueue("now"),
    ]
    wait_all(results)
    assert ORDER == ["now", "first", "second", "third"]
    for result in results:
        run_after = result.task.run_after
        assert result.started_at is not None
        assert run_after is None or result.started_at >= run_after


def test_enqueue_in_atomic_runs_after_commit(backend: ThreadPoolBackend) -> None:
    with transaction.atomic():
        result = task(write_note).enqueue("committed")
        # Not handed to the pool yet: READY, not enqueued, unknown to get_result().
        assert result.status == TaskResultStatus.READY
        assert result.enqueued_at is None
        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(result.id)
        with transaction.atomic():  # only the outermost block's commit counts
            pass
        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(result.id)
    wait_all([result])
    done = backend.get_result(result.id)
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.enqueued_at is not None
    assert Note.objects.filter(text="committed").exists()


class RollbackError(Exception):
    pass


def test_enqueue_in_atomic_never_runs_after_rollback(
    backend: ThreadPoolBackend, caplog: pytest.LogCaptureFixture
) -> None:
    enqueued: list[TaskResult[..., Any]] = []

    def enqueue_then_fail() -> None:
        with transaction.atomic():
            enqueued.append(task(write_note).enqueue("rolled back"))
            raise RollbackError

    with pytest.raises(RollbackError):
        enqueue_then_fail()
    [result] = enqueued
    backend.shutdown()  # waits for anything that could still run
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result(result.id)
    assert not Note.objects.filter(text="rolled back").exists()
    assert "did not run" not in caplog.text  # nothing was queued to be dropped


def test_enqueue_on_commit_off_runs_inside_atomic(configure: Configure) -> None:
    configure(ENQUEUE_ON_COMMIT=False)
    with transaction.atomic():
        result = task(record).enqueue("inside")
        wait_all([result])
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert ORDER == ["inside"]


def test_failing_task_reports_exception_path_and_traceback(backend: ThreadPoolBackend) -> None:
    result = task(fail).enqueue("boom")
    wait_all([result])
    assert result.status == TaskResultStatus.FAILED
    [error] = result.errors
    assert error.exception_class_path == "builtins.ValueError"
    assert error.exception_class is ValueError
    assert "Traceback (most recent call last)" in error.traceback
    assert "ValueError: boom" in error.traceback
    assert result.finished_at is not None
    with pytest.raises(ValueError, match="Task failed"):
        _ = result.return_value


def test_tasks_one_worker_runs_back_to_back_are_units_of_their_own(
    configure: Configure, caplog: pytest.LogCaptureFixture
) -> None:
    # One worker, busy: the queued tasks run one after the other in one pool work item.
    # Each must still be a unit of work: the transaction the first leaves open is
    # rolled back and named, and never swallows the next task's write.
    configure(MAX_WORKERS=1)
    gate = task(wait_for_gate).enqueue()
    wait_running(gate)
    left_open = task(leave_open).enqueue("lost")
    kept = task(write_note).enqueue("kept")
    with caplog.at_level(logging.ERROR, logger="django_thread"):
        GATE.set()
        wait_all([gate, left_open, kept])
    assert [left_open.status, kept.status] == [TaskResultStatus.SUCCESSFUL] * 2
    assert left_open.worker_ids == kept.worker_ids
    assert sorted(Note.objects.values_list("text", flat=True)) == ["kept"]
    assert "task tests.test_tasks.leave_open() ended with a transaction open" in caplog.text


def test_a_task_raising_keyboardinterrupt_does_not_stop_the_backend(
    configure: Configure,
) -> None:
    # Django's backend lets KeyboardInterrupt through; in a worker it ends the pool's
    # work item that ran the task. The queued tasks must still run, on a new one.
    configure(MAX_WORKERS=1)
    gate = task(wait_for_gate).enqueue()
    wait_running(gate)
    interrupted = task(interrupt).enqueue()
    after = [task(write_note).enqueue(f"after {i}") for i in range(3)]
    GATE.set()
    wait_all([gate, *after])
    assert [r.status for r in after] == [TaskResultStatus.SUCCESSFUL] * 3
    assert Note.objects.count() == 3
    interrupted.refresh()
    assert interrupted.status == TaskResultStatus.RUNNING  # as Django leaves it


def test_a_task_refused_a_turn_under_sharing_runs_once_it_gets_one(
    configure: Configure,
) -> None:
    # Under share_connections(), the pool's work item waits for the turn on the shared
    # connection and is refused after the timeout: the task must not be lost with it.
    from django_thread import unit_of_work  # noqa: PLC0415
    from django_thread.testing import share_connections  # noqa: PLC0415

    configure(MAX_WORKERS=1)
    holding, release = threading.Event(), threading.Event()

    def hold_the_turn() -> None:
        with unit_of_work():
            holding.set()
            release.wait(10)

    with share_connections(timeout=0.1):
        holder = threading.Thread(target=hold_the_turn)
        holder.start()
        assert holding.wait(10)
        result = task(write_note).enqueue("after the turn")
        time.sleep(0.5)  # refused more than once by now
        result.refresh()
        before_the_turn = result.status
        assert before_the_turn == TaskResultStatus.READY
        release.set()
        holder.join()
        wait_all([result])
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert list(Note.objects.values_list("text", flat=True)) == ["after the turn"]


def test_statuses_timestamps_workers_and_json(backend: ThreadPoolBackend) -> None:
    result = task(pair).enqueue()
    assert result.enqueued_at is not None
    wait_all([result])
    assert cast(object, result.return_value) == [1, 2]  # normalised to JSON, as Django does
    assert result.started_at is not None
    assert result.finished_at is not None
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.last_attempted_at == result.started_at
    assert len(result.worker_ids) == 1
    assert result.attempts == 1
    assert result.errors == []


def test_context_and_async_tasks(backend: ThreadPoolBackend) -> None:
    contextual = task(takes_context=True)(with_context).enqueue(7)
    coroutine = task(add).enqueue(2, 3)
    wait_all([contextual, coroutine])
    assert contextual.return_value == {"id": contextual.id, "attempt": 1, "value": 7}
    assert cast(object, coroutine.return_value) == 5


def test_signals_in_order_from_the_worker(backend: ThreadPoolBackend) -> None:
    seen: list[tuple[str, str, type[Any], str]] = []

    def receiver(name: str) -> Callable[..., None]:
        def receive(sender: type[Any], task_result: TaskResult[..., Any], **kwargs: Any) -> None:
            seen.append((name, task_result.status, sender, thread_name()))

        return receive

    receivers = {
        s: receiver(n)
        for s, n in [
            (task_enqueued, "enqueued"),
            (task_started, "started"),
            (task_finished, "finished"),
        ]
    }
    for signal, receive in receivers.items():
        signal.connect(receive)
    try:
        ok = task(pair).enqueue()
        wait_all([ok])
        bad = task(fail).enqueue("x")
        wait_all([bad])
    finally:
        for signal, receive in receivers.items():
            signal.disconnect(receive)
    assert [(n, s, c) for n, s, c, _ in seen] == [
        ("enqueued", "READY", ThreadPoolBackend),
        ("started", "RUNNING", ThreadPoolBackend),
        ("finished", "SUCCESSFUL", ThreadPoolBackend),
        ("enqueued", "READY", ThreadPoolBackend),
        ("started", "RUNNING", ThreadPoolBackend),
        ("finished", "FAILED", ThreadPoolBackend),
    ]
    main = thread_name()
    assert seen[0][3] == main
    assert all(t.startswith("tasks-default") for n, _, _, t in seen if n != "enqueued")


def test_shutdown_logs_and_fails_tasks_that_did_not_run(
    configure: Configure, caplog: pytest.LogCaptureFixture
) -> None:
    backend = configure(MAX_WORKERS=1, SHUTDOWN_TIMEOUT=30)
    running = task(wait_for_gate).enqueue()
    wait_running(running)
    queued = [task(record).enqueue(str(i)) for i in range(3)]
    later = task(record).using(run_after=timezone.now() + timedelta(hours=1)).enqueue("later")
    stopper = threading.Thread(target=backend.shutdown)
    with caplog.at_level(logging.WARNING, logger="django_thread.tasks"):
        stopper.start()
        while not backend._pool.closed:  # shutdown() now waits for the running task
            time.sleep(0.005)
        with pytest.raises(BackendShutDownError, match="shut down"):
            task(record).enqueue("too late")
        GATE.set()
        stopper.join()
    wait_all([running, *queued, later])
    assert running.status == TaskResultStatus.SUCCESSFUL
    for result in [*queued, later]:
        assert result.status == TaskResultStatus.FAILED
        assert result.errors[0].exception_class_path == "django_thread.tasks.BackendShutDownError"
        assert f"Task id={result.id} path=tests.test_tasks.record did not run" in caplog.text
    assert ORDER == []
    # Another thread's instance of the alias shares the pool, so it is shut down too.
    other: list[ThreadPoolBackend] = []
    reader = threading.Thread(target=lambda: other.append(task_backends["default"]))  # type: ignore[arg-type]
    reader.start()
    reader.join()
    assert other[0] is not backend
    assert other[0]._pool is backend._pool


def test_shutdown_timeout_logs_tasks_still_running(
    configure: Configure, caplog: pytest.LogCaptureFixture
) -> None:
    backend = configure(MAX_WORKERS=1, SHUTDOWN_TIMEOUT=0)
    running = task(wait_for_gate).enqueue()
    wait_running(running)
    with caplog.at_level(logging.WARNING, logger="django_thread.tasks"):
        backend.shutdown()
    assert f"Task id={running.id} path=tests.test_tasks.wait_for_gate still running" in (
        caplog.text
    )
    GATE.set()
    wait_all([running])
    assert running.status == TaskResultStatus.SUCCESSFUL


def test_results_bounded_oldest_finished_first(configure: Configure) -> None:
    backend = configure(MAX_WORKERS=1, MAX_RESULTS=3)
    finished = []
    for i in range(4):
        result = task(record).enqueue(str(i))
        wait_all([result])
        finished.append(result)
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result(finished[0].id)
    assert [backend.get_result(r.id).id for r in finished[1:]] == [r.id for r in finished[1:]]
    # Queued and running results are never dropped, whatever the bound.
    blocker = task(wait_for_gate).enqueue()
    wait_running(blocker)
    queued = [task(record).enqueue(f"q{i}") for i in range(5)]
    pending_results: list[TaskResult[..., Any]] = [blocker, *queued]
    for pending in pending_results:
        assert backend.get_result(pending.id).id == pending.id
    GATE.set()
    wait_all(queued[-3:])


def test_get_result_unknown_id(backend: ThreadPoolBackend) -> None:
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result("nope")


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"MAX_WORKERS": 0}, "MAX_WORKERS"),
        ({"MAX_WORKERS": True}, "MAX_WORKERS"),
        ({"MAX_RESULTS": -1}, "MAX_RESULTS"),
        ({"ENQUEUE_ON_COMMIT": "yes"}, "ENQUEUE_ON_COMMIT"),
        ({"SHUTDOWN_TIMEOUT": "30"}, "SHUTDOWN_TIMEOUT"),
        ({"MAX_WORKER": 4}, "MAX_WORKER"),
        ({"STATEMENT_TIMEOUT": -1}, "STATEMENT_TIMEOUT"),
        ({"STATEMENT_TIMEOUT": "1s"}, "STATEMENT_TIMEOUT"),
    ],
)
def test_bad_options_are_improperly_configured(
    options: dict[str, Any], named: str, settings: SettingsWrapper
) -> None:
    settings.TASKS = {"default": {"BACKEND": BACKEND, "OPTIONS": options}}
    with pytest.raises(ImproperlyConfigured, match=f"'{named}'"):
        task_backends["default"]  # creating it is the test


def test_invalid_tasks_get_djangos_errors(configure: Configure) -> None:
    configure(queues=["default"])
    with pytest.raises(InvalidTask, match="Queue 'emails' is not valid"):
        task(queue_name="emails")(record)
    with pytest.raises(InvalidTask, match="priority must be a whole number"):
        task(priority=101)(record)  # Task(func=...) alone needs Django 6.1
    with pytest.raises(InvalidTask, match="first argument of 'context'"):
        task(takes_context=True)(record)  # type: ignore[arg-type]


# -- the server drops connections (tests/faults.py) --------------------------------------


@pytest.mark.slow
def test_idle_timeout_with_health_checks_fails_no_task(
    configure: Configure, conn_settings: Any, server: ServerProbe
) -> None:
    timeout = idle_timeout(server.vendor)
    conn_settings(max_age=None, health_checks=True, **timeout.options)
    configure(MAX_WORKERS=4)
    job = task(takes_context=True)(timed_query)
    results: list[TaskResult[..., Any]] = []
    waves = 10 if server.vendor == "postgresql" else 4
    for wave in range(waves):
        if wave:
            time.sleep(timeout.pause)  # every worker's connection idles past the timeout
        batch = [job.enqueue(0.0) for _ in range(40)]
        wait_all(batch)
        results += batch
    assert [r.errors for r in results if r.status != TaskResultStatus.SUCCESSFUL] == []
    # The server really dropped them: more sessions than workers were needed.
    assert len({o.session for o in OUTCOMES.values()}) > 4


@pytest.mark.slow
def test_killed_sessions_fail_only_tasks_with_a_query_in_flight(
    configure: Configure, conn_settings: Any, server: ServerProbe
) -> None:
    conn_settings(max_age=None, health_checks=True)
    configure(MAX_WORKERS=4)
    killer = Killer(server, spare=main_backend_ids())
    job = task(takes_context=True)(timed_query)
    results = [job.enqueue(i % 7 / 300) for i in range(400)]

    def done() -> bool:
        return all(backend_result.is_finished for backend_result in refreshed(results))

    killer.run_until(done)
    failed = [r for r in results if r.status == TaskResultStatus.FAILED]
    assert killer.killed >= 4 * 3
    assert [r.id for r in failed if not killer.overlaps(OUTCOMES[r.id])] == []
    # And the pool recovers: every task succeeds once the killing stops.
    after = [job.enqueue(0.0) for _ in range(40)]
    wait_all(after)
    assert {r.status for r in after} == {TaskResultStatus.SUCCESSFUL}


def refreshed(results: list[TaskResult[..., Any]]) -> list[TaskResult[..., Any]]:
    for result in results:
        if not result.is_finished:
            result.refresh()
    return results


def test_aenqueue_and_aget_result(backend: ThreadPoolBackend) -> None:
    async def enqueue_then_read() -> tuple[str, str]:
        result = await task(pair).aenqueue()
        again = await backend.aget_result(result.id)
        return result.id, again.id

    first, second = asyncio.run(enqueue_then_read())
    assert first == second


EXIT_SCRIPT = """
import logging, sys, time
import django
from django.conf import settings
from tests.settings import DATABASES
settings.configure(
    USE_TZ=True,
    DATABASES=DATABASES,
    INSTALLED_APPS=["tests.testapp"],
    TASKS={"default": {"BACKEND": "django_thread.tasks.ThreadPoolBackend",
                       "OPTIONS": {"MAX_WORKERS": 1, "SHUTDOWN_TIMEOUT": 30}}},
)
django.setup()
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
from django.tasks import task
from tests.test_tasks import record, sleep_briefly
running = task(sleep_briefly).enqueue()
while (running.refresh() or running.status) != "RUNNING":
    time.sleep(0.005)
queued = [task(record).enqueue(str(i)) for i in range(3)]
# One write: print() writes each word apart, and a worker may log in between.
sys.stdout.write(" ".join(["queued", *[r.id for r in queued]]) + "\\n")
"""


def sleep_briefly() -> None:
    time.sleep(0.3)


def test_interpreter_exit_waits_for_running_and_logs_queued() -> None:
    done = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr
    lines = [x for x in done.stdout.splitlines() if x.startswith("queued ")]
    assert len(lines) == 1, (done.stdout, done.stderr)
    queued = lines[0].split()[1:]
    assert len(queued) == 3
    # Not run by the stdlib pool's own exit hook (which would run the whole queue):
    # stopped, and each one logged.
    for result_id in queued:
        assert f"Task id={result_id} path=tests.test_tasks.record did not run" in done.stdout
    assert "still running" not in done.stdout  # the running one was waited for


# -- on the edges: every task ends, or is reported, whatever fails ----------------------
# Each of these failed on 983808c (0.2.0).

ROOT = Path(__file__).resolve().parent.parent
FINAL = {TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED}


class ReceiverError(Exception):
    pass


class InjectedError(Exception):
    pass


def raise_in(step: str) -> Any:
    """A receiver that raises for tasks whose first argument is *step*."""

    def receive(sender: type[Any], task_result: TaskResult[..., Any], **kwargs: Any) -> None:
        if task_result.args[:1] == [step]:
            msg = f"{step} receiver of {task_result.id}"
            raise ReceiverError(msg)

    return receive


@pytest.fixture
def receivers() -> Any:
    connected: list[tuple[Any, Any]] = []

    def connect(signal: Any, step: str) -> None:
        receive = raise_in(step)
        signal.connect(receive)
        connected.append((signal, receive))

    yield connect
    for signal, receive in connected:
        signal.disconnect(receive)


# -- 1. raising signal receivers --------------------------------------------------------


def test_a_raising_task_finished_receiver_loses_no_task(
    configure: Configure, receivers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # On 0.2.0 the worker had taken the next task when the receiver raised: that task
    # stayed RUNNING forever, never run, and nothing was logged.
    configure(MAX_WORKERS=1)
    receivers(task_finished, "finished")
    gate = task(wait_for_gate).enqueue()
    wait_running(gate)  # the rest queue behind it, so each is taken right after another
    with caplog.at_level(logging.ERROR, logger="django_thread.tasks"):
        results = [task(record).enqueue("finished") for _ in range(4)]
        GATE.set()
        wait_all([gate, *results], timeout=20)
    assert [r.status for r in results] == [TaskResultStatus.SUCCESSFUL] * 4
    assert ORDER == ["finished"] * 4
    for result in results:
        wait_logged(caplog, f"task_finished receiver raised for task id={result.id}")
    assert "ReceiverError" in caplog.text  # with the traceback


def test_a_raising_task_started_receiver_fails_its_task_and_the_rest_run(
    configure: Configure, receivers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Django's ImmediateBackend does not run a task whose task_started receiver raised;
    # on 0.2.0 ours left it RUNNING forever. It is FAILED, with the receiver's error.
    configure(MAX_WORKERS=1)
    receivers(task_started, "started")
    with caplog.at_level(logging.ERROR, logger="django_thread.tasks"):
        refused = task(record).enqueue("started")
        after = task(record).enqueue("after")
        wait_all([refused, after], timeout=20)
    assert refused.status == TaskResultStatus.FAILED
    assert refused.errors[0].exception_class_path == "tests.test_tasks.ReceiverError"
    assert f"started receiver of {refused.id}" in refused.errors[0].traceback
    assert after.status == TaskResultStatus.SUCCESSFUL
    assert ORDER == ["after"]


def test_a_raising_task_enqueued_receiver_reaches_the_caller_and_keeps_no_ready_result(
    backend: ThreadPoolBackend, receivers: Any
) -> None:
    seen: list[str] = []

    def remember(sender: type[Any], task_result: TaskResult[..., Any], **kwargs: Any) -> None:
        seen.append(task_result.id)

    task_enqueued.connect(remember)  # before the raising one: it sees the id
    receivers(task_enqueued, "enqueued")
    try:
        with pytest.raises(ReceiverError):
            task(record).enqueue("enqueued")
    finally:
        task_enqueued.disconnect(remember)
    [result_id] = seen
    stored = backend.get_result(result_id)
    # Not READY for ever (0.2.0): it will never run, so it is FAILED, with the error.
    assert stored.status == TaskResultStatus.FAILED
    assert stored.errors[0].exception_class_path == "tests.test_tasks.ReceiverError"
    assert ORDER == []


def test_a_raising_task_enqueued_receiver_after_commit_is_logged_not_raised(
    backend: ThreadPoolBackend, receivers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # The commit happened: raising out of atomic() would tell the caller it did not.
    receivers(task_enqueued, "enqueued")
    with caplog.at_level(logging.ERROR, logger="django_thread.tasks"), transaction.atomic():
        Note.objects.create(text="committed")
        result = task(record).enqueue("enqueued")
    assert Note.objects.filter(text="committed").exists()
    assert backend.get_result(result.id).status == TaskResultStatus.FAILED
    assert f"task_enqueued receiver raised for task id={result.id}" in caplog.text


# -- 2. a far run_after -----------------------------------------------------------------


def test_a_run_after_centuries_away_leaves_the_scheduler_running(configure: Configure) -> None:
    # On 0.2.0 the scheduler's wait raised OverflowError: the thread died, and every
    # later deferred task stayed READY.
    configure(MAX_WORKERS=1)
    far = task(record).using(run_after=datetime.max.replace(tzinfo=UTC)).enqueue("never")
    time.sleep(0.2)  # the scheduler's turn: it waits for the far task now
    soon = task(record).using(run_after=timezone.now() + timedelta(milliseconds=100))
    result = soon.enqueue("soon")
    wait_all([result], timeout=10)
    assert ORDER == ["soon"]
    far.refresh()
    assert far.status == TaskResultStatus.READY


# -- 3. bad options ---------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [math.inf, math.nan, -1, True])
def test_a_shutdown_timeout_that_is_not_a_finite_number_is_refused(
    timeout: float, settings: SettingsWrapper
) -> None:
    settings.TASKS = {"default": {"BACKEND": BACKEND, "OPTIONS": {"SHUTDOWN_TIMEOUT": timeout}}}
    with pytest.raises(ImproperlyConfigured, match=r"'SHUTDOWN_TIMEOUT'.*None"):
        task_backends["default"]  # creating it is the test


# -- 4. and 5. shutdown from a task, and exit bounded by SHUTDOWN_TIMEOUT -----------------

# These tasks need no database: one in memory, whatever the lane's.
SCRIPT = """
import logging, sys, time
import django
from django.conf import settings
settings.configure(
    USE_TZ=True,
    DATABASES={{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}}},
    INSTALLED_APPS=["tests.testapp"],
    TASKS={{"default": {{"BACKEND": "django_thread.tasks.ThreadPoolBackend",
                        "OPTIONS": {{"MAX_WORKERS": 2, "SHUTDOWN_TIMEOUT": {timeout}}}}}}},
)
django.setup()
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(message)s")
from django.tasks import task
from tests import test_tasks as edges
def say(*words):  # one write: print() writes each word apart, and a worker may log between
    sys.stdout.write(" ".join(map(str, words)) + "\\n")
{body}
"""


def run_script(timeout: float | None, body: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(timeout=timeout, body=body)],
        capture_output=True,
        text=True,
        timeout=60,  # 0.2.0 waited for ever in the first two
        check=False,
        cwd=ROOT,
    )
    return done, time.monotonic() - started


def stop_the_backend() -> None:
    backend = task_backends["default"]
    assert isinstance(backend, ThreadPoolBackend)
    backend.shutdown()


def stop_on_finish(sender: type[Any], task_result: TaskResult[..., Any], **kwargs: Any) -> None:
    if task_result.args[:1] == ["stop"]:
        stop_the_backend()


def test_shutdown_from_a_task_does_not_wait_for_that_task() -> None:
    done, _ = run_script(
        None,
        "result = task(edges.stop_the_backend).enqueue()\n"
        "while result.refresh() or not result.is_finished: time.sleep(0.01)\n"
        "say('status', result.status)\n",
    )
    assert done.returncode == 0, done.stderr
    assert "status SUCCESSFUL" in done.stdout
    assert "still running" not in done.stdout


def test_shutdown_from_a_task_finished_receiver_does_not_wait_for_its_thread() -> None:
    # The receiver runs in the worker between two tasks: it must wait neither for the
    # task it was told about nor for one its own thread might hold.
    done, _ = run_script(
        None,
        "from django.tasks.signals import task_finished\n"
        "task_finished.connect(edges.stop_on_finish)\n"
        "from django.db import transaction\n"
        "with transaction.atomic():  # all handed over at once, at commit\n"
        "    results = [task(edges.record).enqueue('stop')]\n"
        "    results += [task(edges.record).enqueue(str(i)) for i in range(20)]\n"
        "time.sleep(1)\n"
        "say('statuses', *sorted({r.refresh() or r.status for r in results}))\n",
    )
    assert done.returncode == 0, done.stderr
    assert "still running" not in done.stdout
    # Every task ran before the shutdown, or is FAILED and logged as not run.
    [statuses] = [x.split()[1:] for x in done.stdout.splitlines() if x.startswith("statuses")]
    assert set(statuses) <= {"SUCCESSFUL", "FAILED"}


def sleep_ten_seconds() -> None:
    time.sleep(10)


def test_interpreter_exit_is_bounded_by_shutdown_timeout() -> None:
    # 0.2.0 exited after 10.1 s: the stdlib's exit hook joins every pool worker with no
    # timeout. A task still running then is cut off, and logged as such.
    done, _ = run_script(
        1,
        "result = task(edges.sleep_ten_seconds).enqueue()\n"
        "while result.refresh() or result.status != 'RUNNING': time.sleep(0.01)\n"
        "say('running', result.id)\n"
        "import atexit\n"
        "exiting = time.monotonic()\n"
        "atexit.register(lambda: say('exit took', time.monotonic() - exiting))\n",
    )
    assert done.returncode == 0, done.stderr
    [line] = [x for x in done.stdout.splitlines() if x.startswith("running ")]
    result_id = line.split()[1]
    # atexit's hooks run after threading's, last registered first: this one, last of all.
    [took] = [float(x.split()[-1]) for x in done.stdout.splitlines() if x.startswith("exit took")]
    assert took < 5, done.stdout  # SHUTDOWN_TIMEOUT=1, and a margin for a loaded machine
    assert (
        f"Task id={result_id} path=tests.test_tasks.sleep_ten_seconds cut off at exit"
        in done.stdout
    )


# -- a TASKS change --------------------------------------------------------------------


def test_a_tasks_change_closes_the_old_pools_connections(
    configure: Configure, probe: ServerProbe, conn_settings: Any
) -> None:
    conn_settings(max_age=None)  # a worker keeps its connection between tasks
    baseline = probe.steady()
    configure(MAX_WORKERS=2)
    wait_all([task(write_note).enqueue("old pool")])
    assert settle(probe, baseline + 1) == baseline + 1
    configure(MAX_WORKERS=3)  # the old pool is forgotten: its idle workers must go
    assert settle(probe, baseline) == baseline
    wait_all([task(write_note).enqueue("new pool")])
    assert Note.objects.count() == 2


# -- every step of a task's life, failing ------------------------------------------------

STEPS = ("enqueued", "started", "task", "result", "finished", "tidying", "none")
TIDYING_FAILS = threading.Event()


def faulty(step: str) -> object:
    Note.objects.create(text=step)
    if step == "task":
        msg = "the task itself"
        raise InjectedError(msg)
    if step == "tidying":
        TIDYING_FAILS.set()  # the boundary after this task raises once
    if step == "result":
        return object()  # not JSON: storing the result fails
    return step


def test_a_failure_at_every_step_leaves_every_task_final_or_reported(
    configure: Configure,
    receivers: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    conn_settings: Any,
) -> None:
    conn_settings(max_age=None)  # so the boundary between two tasks has work to do
    original = _connections._close_if_unusable_or_obsolete

    def tidy(conn: Any) -> None:
        if TIDYING_FAILS.is_set():
            TIDYING_FAILS.clear()
            msg = "tidying"
            raise InjectedError(msg)
        original(conn)

    monkeypatch.setattr(_connections, "_close_if_unusable_or_obsolete", tidy)
    monkeypatch.setattr(_connections, "_only_arms_the_check", lambda conn: False)
    receivers(task_enqueued, "enqueued")
    receivers(task_started, "started")
    receivers(task_finished, "finished")
    backend = configure(MAX_WORKERS=4, SHUTDOWN_TIMEOUT=1)
    per_thread = 70
    results: list[TaskResult[..., Any]] = []
    refused: list[str] = []
    lock = threading.Lock()

    def enqueue_many(offset: int) -> None:
        for i in range(per_thread):
            step = STEPS[(offset + i) % len(STEPS)]
            try:
                if i % 2:  # half of them handed over on commit
                    with transaction.atomic():
                        result = task(faulty).enqueue(step)
                else:
                    result = task(faulty).enqueue(step)
            except ReceiverError:
                with lock:
                    refused.append(step)
                continue
            with lock:
                results.append(result)
        connections.close_all()  # a plain thread: its connection is ours to close

    with caplog.at_level(logging.WARNING, logger="django_thread"):
        threads = [threading.Thread(target=enqueue_many, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        running = task(wait_for_gate).enqueue()  # still running at shutdown
        wait_all(results, timeout=60)
        wait_running(running)
        started = time.monotonic()
        backend.shutdown()
        took = time.monotonic() - started
        GATE.set()
    assert took < 1 + 2  # SHUTDOWN_TIMEOUT and a margin
    assert f"Task id={running.id} path=tests.test_tasks.wait_for_gate still running" in (
        caplog.text
    )
    # Enqueued directly, a task_enqueued failure reaches the caller; on commit, it is
    # logged with the task's id.
    assert set(refused) == {"enqueued"}
    assert len(refused) + len(results) == 4 * per_thread
    expected = {
        "enqueued": "tests.test_tasks.ReceiverError",
        "started": "tests.test_tasks.ReceiverError",
        "task": "tests.test_tasks.InjectedError",
        "result": "builtins.TypeError",
    }
    tidying_failures = caplog.text.count("InjectedError: tidying")
    rows = 0
    for result in results:
        result.refresh()
        assert result.status in FINAL, result
        step = result.args[0]
        if result.errors and "InjectedError: tidying" in result.errors[0].traceback:
            # The boundary before this task failed: that is its error, and it never ran.
            assert step not in ("enqueued", "started")
            tidying_failures += 1
            continue
        rows += step not in ("enqueued", "started")
        if step in expected:
            assert result.status == TaskResultStatus.FAILED
            assert result.errors[0].exception_class_path == expected[step], result.errors
        else:
            assert result.status == TaskResultStatus.SUCCESSFUL, result.errors
        if step in ("enqueued", "finished"):
            wait_logged(caplog, f"receiver raised for task id={result.id}")
    # Each boundary failure is a task's error as it begins, or logged as a unit ends.
    assert tidying_failures >= 1
    # The database saw every task that ran, and no other: none ran twice, none lost.
    assert Note.objects.count() == rows


# -- time limits the database enforces ---------------------------------------------------


def sleep_on_the_server(seconds: float) -> None:
    from tests.test_time_limits import sleep  # noqa: PLC0415

    Note.objects.create(text=f"slept {seconds}")
    sleep(seconds)


def the_limit_in_force() -> list[Any] | None:
    from tests.test_time_limits import limit_in_force  # noqa: PLC0415

    limits = limit_in_force()
    return None if limits is None else list(limits)


def test_statement_timeout_stops_a_long_task_and_the_next_runs_under_it(
    configure: Configure,
) -> None:
    from tests.test_time_limits import ONE_SECOND, TIMED_OUT  # noqa: PLC0415

    configure(MAX_WORKERS=1)
    unlimited = task(sleep_on_the_server).enqueue(1.5)
    wait_all([unlimited])
    assert unlimited.status == TaskResultStatus.SUCCESSFUL  # the control: it runs long

    configure(MAX_WORKERS=1, STATEMENT_TIMEOUT=1)
    with transaction.atomic():  # handed over together: one worker, back to back
        stopped = task(sleep_on_the_server).enqueue(5)
        after = task(the_limit_in_force).enqueue()
    wait_all([stopped, after])
    assert stopped.status == TaskResultStatus.FAILED
    assert TIMED_OUT in stopped.errors[0].traceback
    assert stopped.finished_at is not None
    assert stopped.started_at is not None
    assert (stopped.finished_at - stopped.started_at).total_seconds() < 4
    # Its transaction (autocommit: the insert) stands; the sleep was stopped.
    assert Note.objects.filter(text="slept 5").count() == 1
    assert after.status == TaskResultStatus.SUCCESSFUL
    expected = None if ONE_SECOND is None else list(ONE_SECOND)
    assert after.return_value == expected
