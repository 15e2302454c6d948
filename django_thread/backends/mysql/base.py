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
        if collation or not self.mysql_is_mariadb:
            names = f"SET NAMES {charset}"
            statements.append(f"{names} COLLATE {collation}" if collation else names)
        if sql_mode:
            statements.append(f"SET SESSION sql_mode = '{sql_mode}'")
        for sql in statements:
            with raw.cursor() as cursor:
                cursor.execute(sql)
        return True
