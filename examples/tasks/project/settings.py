"""Settings: one task module, three task backends, chosen by changing TASKS only.

TASKS_VARIANT (an environment variable) picks one of the TASKS below, as a deploy would
pick its settings: `threads` (django_thread's in-process pool, the default), `database`
(django-tasks-db, run by its `db_worker`) or `rq` (django-tasks-rq on Redis, run by
`rqworker`). The apps of all three are installed so that one migrated database serves
them all. The database is an embedded SQLite file by default, any server through
DATABASE_URL; Redis is REDIS_URL (default redis://127.0.0.1:6379/0).
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "example-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["receipts", "django_tasks_db", "django_rq", "django_tasks_rq"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=60,
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Workers need a file: Django's default in-memory test database is per connection.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "test-db.sqlite3")}

QUEUES = ["default", "urgent"]
TASKS_VARIANTS = {
    "threads": {
        "BACKEND": "django_thread.tasks.ThreadPoolBackend",
        "QUEUES": QUEUES,
        "OPTIONS": {"MAX_WORKERS": 4, "SHUTDOWN_TIMEOUT": 30},
    },
    "database": {
        "BACKEND": "django_tasks_db.DatabaseBackend",
        "QUEUES": QUEUES,
    },
    "rq": {
        "BACKEND": "django_tasks_rq.RQBackend",
        "QUEUES": QUEUES,
    },
}
TASKS_VARIANT = os.environ.get("TASKS_VARIANT", "threads")
TASKS = {"default": TASKS_VARIANTS[TASKS_VARIANT]}

# django-rq: every queue in TASKS["default"]["QUEUES"] must be an RQ queue too.
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
RQ_QUEUES = {name: {"URL": REDIS_URL} for name in QUEUES}
