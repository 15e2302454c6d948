"""Run the example projects (examples/) from the docs, on the docs' database server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from django.db import connections

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def database_url() -> str:
    """The docs' database server as a DATABASE_URL ("" keeps an example's SQLite file)."""
    db = connections["default"].settings_dict
    scheme = {"postgresql": "postgres", "mysql": "mysql"}.get(connections["default"].vendor)
    if scheme is None:
        return ""
    # The examples use the server's own database (the NAME before the test prefix).
    name = db["NAME"].removeprefix("test_")
    return f"{scheme}://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{name}"


def run_example(project: str, *command: str) -> str:
    """``python manage.py <command>`` in examples/<project>; its output, checked for success."""
    done = subprocess.run(
        [sys.executable, "manage.py", *command],
        cwd=EXAMPLES / project,
        # The example's own settings (manage.py's default), pointed at our server.
        env={
            **{k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
            "DATABASE_URL": database_url(),
        },
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"{project}: {' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def connreport(*settings: str) -> list[dict[str, str]]:
    """The conn_max_age example's report for *settings*, one dict per table row."""
    args = [arg for setting in settings for arg in ("--setting", setting)]
    lines = run_example("conn_max_age", "connreport", *args).splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("setting"))
    dashes = lines[header + 1]
    # Columns are as wide as their dashes, two spaces apart.
    spans, start = [], 0
    for width in map(len, dashes.split("  ")):
        spans.append((start, start + width))
        start += width + 2
    names = [lines[header][a:b].strip() for a, b in spans]
    rows = []
    for line in lines[header + 2 :]:
        if not line.strip() or line.startswith("OK"):
            break
        rows.append({name: line[a:b].strip() for name, (a, b) in zip(names, spans, strict=True)})
    return rows
