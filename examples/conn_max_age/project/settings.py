"""Settings: an embedded SQLite file by default, any server through DATABASE_URL.

DATABASE_URL=postgres://postgres@127.0.0.1:5432/test python manage.py connreport
DATABASE_URL=mysql://root@127.0.0.1:3306/test python manage.py connreport
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "example-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["ledger"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Threads need a file. Django's default in-memory test database is shared between
    # connections, but it ignores close() (so closing cannot be observed) and locks
    # whole tables against a concurrent writer ("database table is locked").
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "test-db.sqlite3")}
