"""Django's PostgreSQL backend (psycopg 3), reusing connections across threads."""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql import base, creation

from django_thread import _compat
from django_thread._keep import KeepCreationMixin, KeepMixin


class DatabaseCreation(KeepCreationMixin, creation.DatabaseCreation):
    pass


class DatabaseWrapper(KeepMixin, base.DatabaseWrapper):
    creation_class = DatabaseCreation

    def _keep_clean(self, raw: Any) -> bool:
        # psycopg 2 has no .info: it raises, and the connection is closed, never kept.
        from psycopg.pq import TransactionStatus  # noqa: PLC0415

        return bool(raw.info.transaction_status == TransactionStatus.IDLE)

    def _keep_reset(self, raw: Any) -> None:
        # Session state a unit set (SET, temporary tables, advisory locks, LISTEN,
        # prepared statements) must not reach the next thread.
        raw.execute("DISCARD ALL", prepare=False)  # never prepared: it deallocates itself
        _compat.forget_prepared_statements(raw)

    def _keep_state(self) -> dict[str, Any]:
        return {"isolation_level": getattr(self, "isolation_level", None)}
