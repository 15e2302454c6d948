"""django_thread.backends under Django's TestCase, as a project's own tests run it.

The test's connection sits inside the TestCase's atomic() and is never kept; threads
started by a test hand their connections over as anywhere else.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import connections
from django.test import TestCase

from django_thread.backends import close_idle, idle_count
from django_thread.testing import share_connections
from tests.conftest import VENDOR
from tests.test_keep import distinct, in_thread, session
from tests.testapp.models import Note


class KeepTestCase(TestCase):
    saved: ClassVar[dict[str, Any]] = {}

    @classmethod
    def setUpClass(cls) -> None:
        db = connections.settings["default"]
        cls.saved = {"ENGINE": db["ENGINE"], "CONN_MAX_AGE": db["CONN_MAX_AGE"]}
        cls.switch(ENGINE=f"django_thread.backends.{VENDOR}", CONN_MAX_AGE=None)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls) -> None:
        super().tearDownClass()
        cls.switch(**cls.saved)

    @classmethod
    def switch(cls, **values: Any) -> None:
        connections["default"].close()
        del connections["default"]  # made anew, with the ENGINE in effect
        close_idle()
        connections.settings["default"].update(values)

    def test_the_tests_own_connection_is_never_kept(self) -> None:
        Note.objects.create(text="only in the test's transaction")
        with share_connections():
            seen = in_thread(Note.objects.count)
        assert seen == 1
        assert idle_count("default") == 0
        assert connections["default"].connection is not None

    def test_threads_of_a_test_hand_over(self) -> None:
        Note.objects.create(text="not seen by other sessions")
        keys = [in_thread(session) for _ in range(3)]
        assert distinct(keys) == 1
        assert idle_count("default") == 1
        assert in_thread(Note.objects.count) == 0
