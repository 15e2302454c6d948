"""Django's PostgreSQL backend (psycopg 3), reusing connections across threads."""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql import base, creation

from django_thread._keep import KeepCreationMixin, KeepMixin


class DatabaseCreation(KeepCreationMixin, creation.DatabaseCreation):
    pass


class DatabaseWrapper(KeepMixin, base.DatabaseWrapper):
    creation_class = DatabaseCreation

    def _keep_clean(self, raw: Any) -> bool:
        from psycopg.pq import TransactionStatus  # noqa: PLC0415 - psycopg 2 has none

        if raw.info.transaction_status != TransactionStatus.IDLE:
            return False
        # Session state a unit set (SET, temporary tables, advisory locks, LISTEN,
        # prepared statements) must not reach the next thread. psycopg empties its
        # statement cache on seeing DISCARD ALL, but would prepare it too.
        raw.execute("DISCARD ALL", prepare=False)
        return True

    def _keep_state(self) -> dict[str, Any]:
        return {"isolation_level": getattr(self, "isolation_level", None)}
