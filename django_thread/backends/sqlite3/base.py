"""Django's SQLite backend, reusing file database connections across threads."""

from __future__ import annotations

from typing import Any

from django.db.backends.sqlite3 import base

from django_thread._keep import KeepMixin


class DatabaseWrapper(KeepMixin, base.DatabaseWrapper):
    def _keep_clean(self, raw: Any) -> bool:
        return not raw.in_transaction  # a raw BEGIN left open
