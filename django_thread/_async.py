"""``sync_to_async`` whose every call is a unit of work in the thread that runs it."""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor as _StdlibPool
from typing import Any, ParamSpec, TypeVar, overload

from asgiref.sync import SyncToAsync as _AsgirefSyncToAsync
from django.conf import settings

from django_thread import _compat
from django_thread._connections import UnitOfWork, read_settings
from django_thread._executor import ThreadPoolExecutor

_P = ParamSpec("_P")
_R = TypeVar("_R")

_pool: list[ThreadPoolExecutor] = []  # at most one, created on first use
_pool_lock = threading.Lock()  # two threads' first calls must make one pool between them


def sync_to_async_max_workers() -> int:
    """How many threads the shared pool for ``thread_sensitive=False`` calls has."""
    read_settings()  # a bad DJANGO_THREAD is an error here, in the caller
    value = (getattr(settings, "DJANGO_THREAD", None) or {}).get("SYNC_TO_ASYNC_MAX_WORKERS")
    return min(32, (os.cpu_count() or 1) + 4) if value is None else int(value)


def default_executor() -> ThreadPoolExecutor:
    """The shared, lazily created pool that runs ``thread_sensitive=False`` calls.

    Its threads close their connections when they end. Make asyncio's default executor
    use it with ``loop.set_default_executor(default_executor())``.
    """
    with _pool_lock:
        # asyncio.run() shuts its default executor down: make a new pool after that
        if _pool and _compat.is_shut_down(_pool[0]):
            _pool.clear()
        if not _pool:
            _pool.append(
                ThreadPoolExecutor(
                    max_workers=sync_to_async_max_workers(),
                    thread_name_prefix="django_thread.sync_to_async",
                )
            )
        return _pool[0]


class SyncToAsync(_AsgirefSyncToAsync[_P, _R]):
    """asgiref's ``SyncToAsync`` whose every call is a :func:`unit_of_work`."""

    def __init__(
        self,
        func: Callable[_P, _R],
        thread_sensitive: bool = True,
        executor: _StdlibPool | None = None,
        context: contextvars.Context | None = None,
    ) -> None:
        super().__init__(
            func, thread_sensitive=thread_sensitive, executor=executor, context=context
        )
        # One per bridge, as a decorated function has: each thread keeps its own state.
        self._django_thread_unit = UnitOfWork(getattr(func, "__qualname__", None))

    # asgiref's attribute (_compat.ASGIREF_EXECUTOR), read by every call.
    @property
    def _executor(self) -> _StdlibPool | None:
        if self._given_executor is None and not self._thread_sensitive:
            return default_executor()
        return self._given_executor

    @_executor.setter
    def _executor(self, value: _StdlibPool | None) -> None:
        self._given_executor = value

    def thread_handler(
        self,
        loop: Any,
        exc_info: Any,
        task_context: Any,
        func: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        # The unit begins and ends in the worker thread, also when the awaiting
        # task was cancelled: asgiref lets the call finish there.
        with self._django_thread_unit:
            return super().thread_handler(  # type: ignore[no-untyped-call]
                loop, exc_info, task_context, func, *args, **kwargs
            )


@overload
def sync_to_async(
    *,
    thread_sensitive: bool = True,
    executor: _StdlibPool | None = None,
    context: contextvars.Context | None = None,
) -> Callable[[Callable[_P, _R]], Callable[_P, Coroutine[Any, Any, _R]]]: ...
@overload
def sync_to_async(
    func: Callable[_P, _R],
    *,
    thread_sensitive: bool = True,
    executor: _StdlibPool | None = None,
    context: contextvars.Context | None = None,
) -> Callable[_P, Coroutine[Any, Any, _R]]: ...
def sync_to_async(
    func: Callable[_P, _R] | None = None,
    *,
    thread_sensitive: bool = True,
    executor: _StdlibPool | None = None,
    context: contextvars.Context | None = None,
) -> (
    Callable[[Callable[_P, _R]], Callable[_P, Coroutine[Any, Any, _R]]]
    | Callable[_P, Coroutine[Any, Any, _R]]
):
    """Drop-in for asgiref's ``sync_to_async``: each call is a unit of work.

    Inside an ASGI request, an ``atomic()`` block or another unit it changes nothing;
    elsewhere it tidies the thread's connections before and after the call, honouring
    ``CONN_MAX_AGE`` and ``CONN_HEALTH_CHECKS``. ``thread_sensitive=False`` without an
    executor runs on :func:`default_executor`.
    """
    if func is None:

        def decorate(f: Callable[_P, _R]) -> Callable[_P, Coroutine[Any, Any, _R]]:
            return SyncToAsync(
                f, thread_sensitive=thread_sensitive, executor=executor, context=context
            )

        return decorate
    return SyncToAsync(func, thread_sensitive=thread_sensitive, executor=executor, context=context)


database_sync_to_async = sync_to_async
