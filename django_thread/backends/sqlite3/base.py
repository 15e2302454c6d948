"""Django's SQLite backend, reusing file database connections across threads."""

from __future__ import annotations

from typing import Any

from django.db.backends.sqlite3 import base, creation

from django_thread._keep import KeepCreationMixin, KeepMixin


class DatabaseCreation(KeepCreationMixin, creation.DatabaseCreation):
    pass


class DatabaseWrapper(KeepMixin, base.DatabaseWrapper):
    creation_class = DatabaseCreation

    def _keep_clean(self, raw: Any) -> bool:
        return not raw.in_transaction  # a raw BEGIN left open
