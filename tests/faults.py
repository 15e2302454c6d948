"""Real fault injection: the server drops idle sessions, or we kill them."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db.backends.signals import connection_created

from tests.server import ServerProbe
from tests.work import session_id


@dataclasses.dataclass(frozen=True)
class IdleTimeout:
    """Per-session server settings that drop a connection idle longer than *seconds*."""

    options: dict[str, Any]
    seconds: float

    @property
    def pause(self) -> float:
        """How long to stay idle so that the server has surely dropped the session."""
        return self.seconds * 1.6 + 0.05


def idle_timeout(vendor: str) -> IdleTimeout:
    if vendor == "postgresql":
        # libpq "options" sets it for our sessions only, not for the shared server.
        return IdleTimeout({"options": "-c idle_session_timeout=100"}, 0.1)
    # MariaDB's wait_timeout counts whole seconds; 1 is the shortest.
    return IdleTimeout({"init_command": "SET SESSION wait_timeout=1"}, 1.0)


@dataclasses.dataclass
class Outcome:
    worker: str
    session: int | None  # server-side id of the connection open when the task began
    db_started: float
    ended: float
    error: str | None = None


class Recorder:
    """Runs small ORM tasks and records, per task, what happened and where."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self.connects = 0
        self._lock = threading.Lock()

    def __enter__(self) -> Recorder:
        connection_created.connect(self._connected)
        return self

    def __exit__(self, *exc: object) -> None:
        connection_created.disconnect(self._connected)

    def _connected(self, **kwargs: Any) -> None:
        with self._lock:
            self.connects += 1

    def task(self, work: Callable[[], object], delay: float = 0.0) -> Callable[[], None]:
        def run() -> None:
            if delay:
                time.sleep(delay)  # time passes before the task touches the database
            session = session_id()
            outcome = Outcome(threading.current_thread().name, session, time.monotonic(), 0)
            try:
                work()
            except Exception as exc:
                outcome.error = f"{type(exc).__name__}: {exc}".strip()
            finally:
                outcome.ended = time.monotonic()
                with self._lock:
                    self.outcomes.append(outcome)

        return run

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error]

    def summary(self) -> str:
        errors = sorted({(o.error or "")[:70] for o in self.failures})
        return f"{len(self.failures)} of {len(self.outcomes)} failed {errors[:3]}"


class Killer:
    """Kills every session of the test database, except *spare*, every *interval*."""

    def __init__(self, probe: ServerProbe, spare: Iterable[int], interval: float = 0.1):
        self.probe = probe
        self.spare = set(spare)
        self.interval = interval
        self.kills: list[tuple[float, float, list[int]]] = []  # (started, ended, ids)
        self._stop = threading.Event()

    def run_until(self, done: Callable[[], bool]) -> None:
        """Kill from the calling (main) thread until *done()*.

        Returns once the server no longer lists the last sessions killed (it acts on a
        kill a moment after the call returns), so that the killing has really stopped.
        """
        victims: list[int] = []
        while not done():
            self._stop.wait(self.interval)
            started = time.monotonic()
            victims = [i for i in self.probe.backend_ids() if i not in self.spare]
            for victim in victims:
                self.probe.kill(victim)
            self.kills.append((started, time.monotonic(), victims))
        self.probe.drained(2.0, victims)

    @property
    def killed(self) -> int:
        return sum(len(ids) for _, _, ids in self.kills)

    def overlaps(self, outcome: Outcome, grace: float = 0.05) -> bool:
        """Whether a kill was under way while *outcome*'s task used the database.

        *grace* covers the server acting on a kill a little after the call returned.
        """
        return any(
            started <= outcome.ended and ended + grace >= outcome.db_started
            for started, ended, victims in self.kills
            if victims
        )


@contextmanager
def counting_pings(alias: str) -> Iterator[list[int]]:
    """Count the health-check pings (the backend's is_usable()) on *alias*, in any thread.

    The real check still runs: this observes, it does not stand in for the server.
    """
    from django.db import connections  # noqa: PLC0415

    wrapper_class = type(connections[alias])
    real = wrapper_class.is_usable
    calls = [0]
    lock = threading.Lock()

    def counted(self: Any) -> bool:
        with lock:
            calls[0] += 1
        return bool(real(self))

    wrapper_class.is_usable = counted  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        wrapper_class.is_usable = real  # type: ignore[method-assign]


def set_up_statement(probe: ServerProbe) -> dict[str, Any]:
    """OPTIONS under which Django's connect() sends a statement once the socket is open.

    PostgreSQL: ``SET ROLE`` to the user it already is (``assume_role``); MariaDB:
    ``SET SESSION TRANSACTION ISOLATION LEVEL``, Django's default made explicit. Both
    are real set-up steps, which fail on a session the server has ended.
    """
    if probe.vendor == "postgresql":
        return {"assume_role": probe.settings["USER"]}
    return {"isolation_level": "read committed"}


@contextmanager
def set_up_killed(probe: ServerProbe, times: int = 1) -> Iterator[list[int]]:
    """The next *times* connects find their session ended by the server mid-set-up.

    As a failover, a DBA or an idle timeout on a stalled machine can do it: after the
    socket opened, before Django's set-up statement (see set_up_statement()). connect()
    then raises, and sends no connection_created. The kill is real; only its moment is
    chosen, by running it just before Django's own init_connection_state(). Yields the
    ids of the sessions killed.
    """
    from django.db import connections  # noqa: PLC0415

    wrapper_class = type(connections["default"])
    real = wrapper_class.init_connection_state
    killed: list[int] = []
    lock = threading.Lock()

    def killed_first(self: Any) -> None:
        with lock:
            session = session_id(self.alias) if len(killed) < times else None
            if session is not None:
                killed.append(session)
                probe.kill(session)
                probe.drained(2.0, [session])
        real(self)

    wrapper_class.init_connection_state = killed_first  # type: ignore[method-assign]
    try:
        yield killed
    finally:
        wrapper_class.init_connection_state = real  # type: ignore[method-assign]
