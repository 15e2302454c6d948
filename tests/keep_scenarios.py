"""Scenarios of tests/test_keep.py that need a process of their own.

    python tests/keep_scenarios.py exit|fork '<DATABASES["default"] as JSON>'

Prints one JSON line of results. ``exit``: a thread gives its connection back, and the
process exits normally. ``fork``: then the process forks, the child exits normally, and
the parent checks its kept session survived. ``testdb``: as a test runner does, create
a test database, give a connection to it back, and destroy the database.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from typing import Any

import django
from django.conf import settings


def main(name: str, db: dict[str, Any]) -> dict[str, Any]:
    settings.configure(
        DATABASES={"default": {**db, "CONN_MAX_AGE": None}}, USE_TZ=True, INSTALLED_APPS=[]
    )
    django.setup()
    from django.db import connection  # noqa: PLC0415

    from django_thread import Thread  # noqa: PLC0415
    from django_thread.backends import idle_count  # noqa: PLC0415

    def session() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_backend_pid()"
                if connection.vendor == "postgresql"
                else "SELECT CONNECTION_ID()"
            )
            return int(cursor.fetchone()[0])

    def in_thread() -> int:
        out: list[int] = []
        thread = Thread(target=lambda: out.append(session()))
        thread.start()
        thread.join()
        return out[0]

    if name == "testdb":
        old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
        kept = in_thread()
        connection.creation.destroy_test_db(old_name, verbosity=0)
        return {"session": kept, "idle": idle_count("default")}

    before = in_thread()
    result: dict[str, Any] = {"session": before, "idle": idle_count("default")}
    if name == "fork":
        pid = os.fork()
        if pid == 0:  # the child: forget, free, exit as any process does
            gc.collect()
            sys.exit(idle_count("default"))
        _, status = os.waitpid(pid, 0)
        result["child"] = os.waitstatus_to_exitcode(status)
        result["before"], result["after"] = before, in_thread()
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], json.loads(sys.argv[2]))))
