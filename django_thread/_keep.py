"""Reusing connections across threads: the policy behind ``django_thread.backends``.

Under ASGI, Django runs each request's synchronous code in a new thread, and a thread's
connections die with it, so ``CONN_MAX_AGE`` never reuses one (Django ticket #33497).
The ENGINE wrappers keep a few idle raw DB-API connections per alias, process-wide:

- **Given back** only when django_thread closes a thread's connections as the thread
  ends, or under ASGI as a request ends in the thread asgiref made for it
  (:func:`close_at_thread_exit`), and only a clean one: autocommit on, outside
  ``atomic()``, no error since it opened, younger than ``CONN_MAX_AGE`` (0 never keeps),
  not a SQLite in-memory database, not a test's shared connection, keep not full, and
  as the backend's ``_keep_clean()`` judges it without a round trip (PostgreSQL: no
  transaction open; SQLite: its session unchanged). Every other close really closes.
- **Taken** by the next connect of that alias in any thread, newest first; every one
  past ``CONN_MAX_AGE`` is closed as that connect begins. The backend's
  ``_keep_reset()`` then puts its session back as a new one's (PostgreSQL,
  MariaDB/MySQL) in one round trip, which also proves the server still has it: one that
  fails is closed, and the next is tried, so no health-check ping is needed. Its birth
  time goes with it, so ``CONN_MAX_AGE`` counts from the real connect.
- **Closed** at interpreter exit; **forgotten, never closed,** in a forked child, whose
  copies of the sockets are the parent's sessions.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.backends.base.creation import BaseDatabaseCreation

    _Base = BaseDatabaseWrapper
    _CreationBase = BaseDatabaseCreation
else:
    _Base = _CreationBase = object

logger = logging.getLogger("django_thread")

#: How many idle connections an alias keeps when its ``OPTIONS`` say nothing.
DEFAULT_KEEP = 4
KEEP_OPTION = "keep"


class _Kept(NamedTuple):
    raw: Any  # the DB-API connection
    born: float  # time.monotonic() when it was opened
    fingerprint: tuple[object, ...]  # the settings it was opened with
    state: dict[str, Any]  # wrapper attributes its connect set (PostgreSQL: isolation)


class _Keep:
    """Idle raw connections per alias; thread-safe, process-wide."""

    def __init__(self) -> None:
        # Threads give back and take at once; put() checks the limit, then appends.
        self.lock = threading.Lock()
        self.idle: dict[str, list[_Kept]] = {}
        self.closed = False  # the interpreter is exiting: keep nothing more

    def put(self, alias: str, kept: _Kept, limit: int) -> bool:
        with self.lock:
            idle = self.idle.setdefault(alias, [])
            if self.closed or len(idle) >= limit:
                return False
            idle.append(kept)
            return True

    def take(self, alias: str) -> _Kept | None:
        with self.lock:
            idle = self.idle.get(alias)
            # Newest first: the oldest ones age out rather than all staying warm.
            return idle.pop() if idle else None

    def expired(self, alias: str, max_age: float) -> list[_Kept]:
        """Take out those opened *max_age* seconds ago or more, for closing."""
        with self.lock:
            idle = self.idle.get(alias, [])
            deadline = time.monotonic() - max_age
            old = [kept for kept in idle if kept.born <= deadline]
            if old:
                idle[:] = [kept for kept in idle if kept.born > deadline]
            return old

    def count(self, alias: str) -> int:
        with self.lock:
            return len(self.idle.get(alias, ()))

    def drain(self, alias: str | None = None) -> list[_Kept]:
        with self.lock:
            if alias is not None:
                return self.idle.pop(alias, [])
            kept = [k for idle in self.idle.values() for k in idle]
            self.idle.clear()
            return kept


_keep = _Keep()


def idle_count(alias: str = "default") -> int:
    """How many idle connections the database alias *alias* keeps now."""
    return _keep.count(alias)


def close_idle(alias: str | None = None) -> None:
    """Close the idle connections kept for *alias*, or for every alias.

    Runs by itself at interpreter exit and around a test database's creation and
    destruction. Connections in use are not touched; they are kept again as their
    threads end, unless closed otherwise.
    """
    for kept in _keep.drain(alias):
        _close_raw(kept.raw)


def _close_raw(raw: Any) -> None:
    try:
        raw.close()
    except Exception:  # already dead: nothing to give back to the server
        logger.debug("django_thread: closing a kept connection failed", exc_info=True)


def _at_exit() -> None:
    _keep.closed = True
    close_idle()


atexit.register(_at_exit)


def _after_fork_in_child() -> None:
    """Forget the parent's idle connections without ending its sessions.

    The child shares their sockets: closing one, or freeing it (mysqlclient sends
    COM_QUIT as it is freed), would end the parent's session. /dev/null is put in
    place of each socket first, so whatever the driver writes later goes nowhere.
    """
    # A new keep: the parent's lock may be held by a thread the child does not have.
    global _keep
    old, _keep = _keep, _Keep()
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for kept in [k for idle in old.idle.values() for k in idle]:
            fileno = getattr(kept.raw, "fileno", None)
            if fileno is None:  # SQLite: a file, closed harmlessly, but kept open
                _orphans.append(kept.raw)
                continue
            with contextlib.suppress(Exception):
                os.dup2(devnull, fileno())
    finally:
        os.close(devnull)


_orphans: list[Any] = []
os.register_at_fork(after_in_child=_after_fork_in_child)


def keep_limit(settings_dict: dict[str, Any]) -> int:
    """``OPTIONS["keep"]``: at most this many idle connections for the alias."""
    limit = settings_dict["OPTIONS"].get(KEEP_OPTION, DEFAULT_KEEP)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        msg = (
            f'DATABASES OPTIONS["{KEEP_OPTION}"] must be a whole number of idle '
            f"connections, 0 or more (0 turns keeping off), not {limit!r}."
        )
        raise ImproperlyConfigured(msg)
    return limit


class KeepMixin(_Base):
    """What ``django_thread.backends.*.DatabaseWrapper`` add to Django's wrapper."""

    _closing_thread = False  # close_at_thread_exit() is closing: give back if clean
    _born = 0.0  # when the current raw connection was opened

    # --- what each backend tells -------------------------------------------------------

    def _keep_clean(self, raw: Any) -> bool:
        """Whether *raw* may be given back, judged without a round trip if possible."""
        return True

    def _keep_reset(self, raw: Any) -> None:
        """Put *raw*'s session back as a new one's as it is taken, or raise.

        A round trip on a server, and so the health check too: a session the server
        dropped while kept fails here, and is closed rather than handed over.
        """

    def _keep_state(self) -> dict[str, Any]:
        """Wrapper attributes that the backend's get_new_connection() sets."""
        return {}

    # --- giving back --------------------------------------------------------------------

    def close_at_thread_exit(self) -> None:
        """Close as the thread ends: the raw connection is kept if it is clean."""
        self._closing_thread = True
        try:
            self.close()
        finally:
            self._closing_thread = False

    def _close(self) -> None:
        raw = self.connection
        if raw is not None and self._closing_thread:
            try:
                if self._give_back(raw):
                    return  # Django's close() now forgets it
            except Exception:  # a reset that failed, a setting gone bad: close it
                logger.debug("django_thread: a connection was not kept", exc_info=True)
        super()._close()  # type: ignore[misc]  # not in django-stubs

    def _give_back(self, raw: Any) -> bool:
        limit = keep_limit(self.settings_dict)
        if not (
            limit
            and self.settings_dict["CONN_MAX_AGE"] != 0
            and (self.close_at is None or time.monotonic() < self.close_at)
            and self.autocommit
            and not self.in_atomic_block
            and not self.needs_rollback
            and not self.errors_occurred
            and not self.allow_thread_sharing  # a test's shared connection
            and not getattr(self, "pool", None)  # Django's own pool keeps it
            and not _in_memory(self)
            and _keep.count(self.alias) < limit  # don't pay _keep_clean() for nothing
        ):
            return False
        if not self._keep_clean(raw):
            return False
        kept = _Kept(raw, self._born, self._fingerprint(), self._keep_state())
        return _keep.put(self.alias, kept, limit)

    # --- taking -------------------------------------------------------------------------

    def get_connection_params(self) -> dict[str, Any]:
        params: dict[str, Any] = super().get_connection_params()
        keep_limit(self.settings_dict)  # a bad value is an error at connect
        params.pop(KEEP_OPTION, None)  # ours, not the driver's
        return params

    def get_new_connection(self, conn_params: Any) -> Any:
        fingerprint = self._fingerprint()
        max_age = self.settings_dict["CONN_MAX_AGE"]
        if max_age is not None:
            # Newest first, so an older one may not come up again for long: close every
            # one past CONN_MAX_AGE as anyone connects, not only when its turn comes.
            for expired in _keep.expired(self.alias, max_age):
                _close_raw(expired.raw)
        while (kept := _keep.take(self.alias)) is not None:
            if kept.fingerprint != fingerprint or (
                max_age is not None and time.monotonic() >= kept.born + max_age
            ):
                _close_raw(kept.raw)
                continue
            try:
                # Reset as it is taken, not as it is given back: the one round trip a pool
                # spends on its health check. Meanwhile, what a unit left (a lock, a temp
                # table) stays on the idle session, as on Django's persistent connection.
                self._keep_reset(kept.raw)
            except Exception:  # dropped while kept, or the reset failed: try the next one
                logger.debug("django_thread: a kept connection was not reusable", exc_info=True)
                _close_raw(kept.raw)
                continue
            for name, value in kept.state.items():
                setattr(self, name, value)
            self._born = kept.born
            # connect() set close_at from now: count from the real connect instead.
            self.close_at = None if max_age is None else kept.born + max_age
            return kept.raw
        raw = super().get_new_connection(conn_params)
        self._born = time.monotonic()
        return raw

    def _fingerprint(self) -> tuple[object, ...]:
        """What a connection was opened with; one opened otherwise is not handed over."""
        s = self.settings_dict
        return (
            s["NAME"],
            s["USER"],
            s["PASSWORD"],
            s["HOST"],
            s["PORT"],
            dict(s["OPTIONS"]),
            s["AUTOCOMMIT"],
            self.timezone_name,
            settings.USE_TZ,
        )


class KeepCreationMixin(_CreationBase):
    """Test databases are made, copied and dropped with no kept connection to them.

    PostgreSQL refuses to drop or copy a database other sessions are connected to,
    and a kept connection to the database a test run replaced must not be handed on.
    """

    def create_test_db(self, *args: Any, **kwargs: Any) -> str:
        close_idle(self.connection.alias)
        return super().create_test_db(*args, **kwargs)

    def clone_test_db(self, *args: Any, **kwargs: Any) -> None:
        close_idle(self.connection.alias)
        super().clone_test_db(*args, **kwargs)

    def destroy_test_db(self, *args: Any, **kwargs: Any) -> None:
        close_idle(self.connection.alias)
        super().destroy_test_db(*args, **kwargs)


def _in_memory(conn: BaseDatabaseWrapper) -> bool:
    is_in_memory = getattr(conn, "is_in_memory_db", None)
    return bool(is_in_memory and is_in_memory())
