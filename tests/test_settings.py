"""The DJANGO_THREAD setting: read and validated where the user calls, never in a worker.

A bad value must give a clear error in the caller's thread (executor construction,
submit(), Thread.start(), unit_of_work's entry) or from the system check, and a pool
that meets one still resolves every future: an exception of ours raised inside the
stdlib's worker loop kills the worker, and the futures queued behind it never resolve.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from typing import Any

import pytest
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.test.utils import modify_settings, override_settings

from django_thread import Thread, ThreadPoolExecutor, _connections, unit_of_work
from django_thread.checks import settings_messages
from tests.work import query

pytestmark = pytest.mark.django_db(transaction=True)

BAD = [
    pytest.param({"HEALTH_CHECK_WINDOW": "0.5s"}, id="window-a-string"),
    pytest.param({"HEALTH_CHECK_WINDOW": -1}, id="window-negative"),
    pytest.param({"HEALTH_CHECK_WINDOW": True}, id="window-a-bool"),
    pytest.param({"HEALTH_CHECK_WINDOW": float("nan")}, id="window-nan"),
    pytest.param({"HEALTH_CHECK_WINDOWS": 1}, id="unknown-key"),
    pytest.param({"SYNC_TO_ASYNC_MAX_WORKERS": 0}, id="async-workers-zero"),
    pytest.param({"SYNC_TO_ASYNC_MAX_WORKERS": "8"}, id="async-workers-a-string"),
    pytest.param(["HEALTH_CHECK_WINDOW"], id="not-a-dict"),
]


@pytest.mark.parametrize("value", BAD)
def test_a_bad_setting_is_an_error_in_the_callers_thread(value: Any) -> None:
    with override_settings(DJANGO_THREAD=value):
        with pytest.raises(ImproperlyConfigured, match="DJANGO_THREAD"):
            ThreadPoolExecutor(max_workers=1)
        with pytest.raises(ImproperlyConfigured, match="DJANGO_THREAD"):
            Thread(target=query).start()
        with pytest.raises(ImproperlyConfigured, match="DJANGO_THREAD"), unit_of_work():
            pytest.fail("the unit must not begin")  # pragma: no cover
        assert [m.id for m in settings_messages(value)] == ["django_thread.E001"]
    # Nothing was left half-begun: the thread goes on as before.
    with unit_of_work():
        query()


@pytest.mark.parametrize("value", BAD)
def test_the_check_reports_a_bad_setting(value: Any) -> None:
    with (
        override_settings(DJANGO_THREAD=value),
        modify_settings(INSTALLED_APPS={"append": "django_thread"}),
    ):
        assert "django_thread.E001" in [m.id for m in run_checks(tags=["django_thread"])]


def test_unknown_keys_are_named_with_the_valid_ones() -> None:
    [message] = settings_messages({"HEALTH_CHECK_WINDOWS": 1})
    assert "'HEALTH_CHECK_WINDOWS'" in message.msg
    assert "HEALTH_CHECK_WINDOW" in message.msg.replace("'HEALTH_CHECK_WINDOWS'", "")


def test_a_pool_whose_settings_turn_bad_resolves_every_future() -> None:
    # The app is not installed, so no check ran: the first task succeeds, the setting
    # turns bad, and on 0.2.0 the worker died at the next boundary and the later
    # futures never resolved.
    gate = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(query)
        held = pool.submit(gate.wait, 10)
        queued = [pool.submit(query) for _ in range(3)]
        futures: list[concurrent.futures.Future[Any]] = [first, held, *queued]
        with override_settings(DJANGO_THREAD={"HEALTH_CHECK_WINDOW": "0.5s"}):
            # Reported where the user calls: a new pool, a unit, the system check.
            with pytest.raises(ImproperlyConfigured, match="HEALTH_CHECK_WINDOW"):
                ThreadPoolExecutor(max_workers=1)
            gate.set()
            _, pending = concurrent.futures.wait(futures, timeout=10)
            assert not pending
            assert pool.submit(query).result(timeout=10) == 0  # the worker carried on
        assert first.result() == 0
        assert held.result() is True
        for future in queued:
            assert future.result() == 0


@pytest.mark.parametrize("max_age", [0, None])
def test_an_error_of_ours_at_a_boundary_never_kills_a_worker(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    conn_settings: Any,
    max_age: int | None,
) -> None:
    # Whatever goes wrong in our code between two tasks is logged; the worker carries
    # on and every future resolves.
    def broken(*args: Any, **kwargs: Any) -> None:
        msg = "injected"
        raise RuntimeError(msg)

    conn_settings(max_age=max_age)
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(query).result(timeout=10) == 0  # the worker has connected
        monkeypatch.setattr(_connections, "_close_if_unusable_or_obsolete", broken)
        monkeypatch.setattr(_connections, "_only_arms_the_check", lambda conn: False)
        with caplog.at_level(logging.ERROR, logger="django_thread"):
            futures = [pool.submit(query) for _ in range(5)]
            _, pending = concurrent.futures.wait(futures, timeout=10)
            assert not pending
            monkeypatch.undo()
            assert pool.submit(query).result(timeout=10) == 0  # the worker carried on
    # A failure as a task begins is that task's error; one as it ends is logged.
    errors = {str(f.exception()) for f in futures if f.exception() is not None}
    assert errors <= {"injected"}
    if max_age is None:  # a kept connection is tidied as the next task begins
        assert errors, "the injected failure never reached a task's start"
    assert any("injected" in str(r.exc_info) for r in caplog.records)
