"""Settings: an embedded SQLite file by default, any server through DATABASE_URL.

Persistent connections with health checks, as a long-lived ASGI process would use them.
IDLE_TIMEOUT (seconds, an environment variable) makes PostgreSQL or MariaDB drop this
process's sessions after that long idle, as a proxy or an idle-session timeout does in
production: the fault the example shows.
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "example-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
INSTALLED_APPS = ["channels", "django_thread", "notes"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=None,
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Threads need a file: Django's default in-memory test database is per connection.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "test-db.sqlite3")}

if os.environ.get("IDLE_TIMEOUT"):
    from notes.faults import idle_timeout_options

    DATABASES["default"]["OPTIONS"] = idle_timeout_options(
        DATABASES["default"]["ENGINE"], float(os.environ["IDLE_TIMEOUT"])
    )
