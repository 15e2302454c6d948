"""The fault: the database server drops a session that sat idle for a while."""

from __future__ import annotations

from typing import Any


def idle_timeout_options(engine: str, seconds: float) -> dict[str, Any]:
    """Connection OPTIONS that make the server end a session idle for *seconds*.

    SQLite has no server: nothing is dropped, and the example shows only that no
    connection is left behind.
    """
    if engine.endswith("postgresql"):
        return {"options": f"-c idle_session_timeout={int(seconds * 1000)}"}
    if engine.endswith("mysql"):
        return {"init_command": f"SET SESSION wait_timeout={max(1, round(seconds))}"}
    return {}
