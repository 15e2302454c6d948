"""Django's MySQL/MariaDB backend (mysqlclient), reusing connections across threads."""

from __future__ import annotations

from typing import Any

from django.db.backends.mysql import base, creation

from django_thread._keep import KeepCreationMixin, KeepMixin


class DatabaseCreation(KeepCreationMixin, creation.DatabaseCreation):
    pass


class DatabaseWrapper(KeepMixin, base.DatabaseWrapper):
    creation_class = DatabaseCreation

    def _keep_clean(self, raw: Any) -> bool:
        # The server's own autocommit flag: a raw "SET autocommit = 0" shows here. A raw
        # START TRANSACTION does not, and mysqlclient cannot tell: roll back, as a
        # close would have.
        if not raw.get_autocommit():
            return False
        raw.rollback()
        return True
