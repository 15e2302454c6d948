"""Django's MySQL/MariaDB backend (mysqlclient), reusing connections across threads."""

from __future__ import annotations

from typing import Any

from django.db.backends.mysql import base, creation

from django_thread import _compat
from django_thread._keep import KeepCreationMixin, KeepMixin


class DatabaseCreation(KeepCreationMixin, creation.DatabaseCreation):
    pass


class DatabaseWrapper(KeepMixin, base.DatabaseWrapper):
    creation_class = DatabaseCreation

    def _keep_clean(self, raw: Any) -> bool:
        return _compat.can_reset_mysql_sessions()  # or _keep_reset() could never succeed

    def _keep_reset(self, raw: Any) -> None:
        # Session state a unit set (SET, @variables, temporary tables, GET_LOCK() locks,
        # a raw START TRANSACTION) must not reach the next thread: the server resets the
        # session to a new one's, which undoes what mysqlclient's connect set too.
        _compat.reset_mysql_session(raw)
        options = self.settings_dict["OPTIONS"]
        init_command = options.get("init_command")
        charset = options.get("charset", "utf8mb4")
        collation = options.get("collation")
        sql_mode = options.get("sql_mode")
        # In mysqlclient's order. Django's connect() sets autocommit and the isolation
        # level again as the next thread takes it. MariaDB keeps the charset of the
        # handshake, which is mysqlclient's; MySQL goes back to the server's.
        statements = [init_command] if init_command else []
        if collation or "mariadb" not in raw.get_server_info().lower():
            names = f"SET NAMES {charset}"
            statements.append(f"{names} COLLATE {collation}" if collation else names)
        if sql_mode:
            statements.append(f"SET SESSION sql_mode = '{sql_mode}'")
        for sql in statements:
            with raw.cursor() as cursor:
                cursor.execute(sql)

    def _keep_state(self) -> dict[str, Any]:
        # The server's version and settings, which Django reads once per wrapper: a new
        # thread's wrapper would ask again, a round trip per request under ASGI.
        data = self.__dict__.get("mysql_server_data")
        return {} if data is None else {"mysql_server_data": data}
