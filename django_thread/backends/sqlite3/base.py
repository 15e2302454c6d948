"""Django's SQLite backend, reusing file database connections across threads."""

from __future__ import annotations

from typing import Any

from django.db.backends.sqlite3 import base, creation

from django_thread._keep import KeepCreationMixin, KeepMixin


class DatabaseCreation(KeepCreationMixin, creation.DatabaseCreation):
    pass


# What a unit may change on the connection itself. SQLite has no reset: this is read as
# a new connection's connect() ends (connection_created's receivers ran) and at each
# give-back; a connection that differs is not kept. One PRAGMA a statement: their
# table-valued forms cost 10-20 times more. case_sensitive_like cannot be read at all.
_PRAGMAS = (
    "automatic_index",
    "busy_timeout",
    "cache_size",
    "foreign_keys",
    "ignore_check_constraints",
    "journal_mode",
    "legacy_alter_table",
    "locking_mode",
    "mmap_size",
    "query_only",
    "recursive_triggers",
    "reverse_unordered_selects",
    "synchronous",
    "temp_store",
    "trusted_schema",
)
_SESSION_SQL = (
    *(f"PRAGMA {name}" for name in _PRAGMAS),
    "SELECT COUNT(*) FROM temp.sqlite_master",  # TEMP tables, views, triggers
    "PRAGMA database_list",  # attached databases
)


def _read_session(raw: Any) -> tuple[object, ...]:
    rows = tuple(raw.execute(sql).fetchall() for sql in _SESSION_SQL)
    return (raw.row_factory, raw.text_factory, *rows)


class DatabaseWrapper(KeepMixin, base.DatabaseWrapper):
    creation_class = DatabaseCreation

    _session: tuple[object, ...] = ()  # as its first connect() left it

    def get_new_connection(self, conn_params: Any) -> Any:
        self._session = ()  # a kept connection comes with its own
        return super().get_new_connection(conn_params)

    def connect(self) -> None:
        super().connect()
        if not self._session:
            self._session = _read_session(self.connection)

    def _keep_state(self) -> dict[str, Any]:
        return {"_session": self._session}

    def _keep_clean(self, raw: Any) -> bool:
        # Not a raw BEGIN left open, nothing changed since connect() (see above).
        return not raw.in_transaction and _read_session(raw) == self._session
