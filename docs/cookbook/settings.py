"""Settings for the docs' executed examples: the test suite's databases, this app.

Connections are configured as in production: persistent, with health checks.
"""

import copy

from tests.settings import DATABASES as TEST_DATABASES
from tests.settings import DEFAULT_AUTO_FIELD, SECRET_KEY, USE_TZ

__all__ = ["DATABASES", "DEFAULT_AUTO_FIELD", "INSTALLED_APPS", "SECRET_KEY", "TASKS", "USE_TZ"]

INSTALLED_APPS = ["cookbook"]
DATABASES = copy.deepcopy(TEST_DATABASES)
for database in DATABASES.values():
    database["CONN_MAX_AGE"] = 60
    database["CONN_HEALTH_CHECKS"] = True

# docs/howto/tasks.md: Django 6.0's tasks on django-thread's pool (Django 5.2 ignores it).
TASKS = {
    "default": {
        "BACKEND": "django_thread.tasks.ThreadPoolBackend",
        "QUEUES": ["default", "urgent"],
        "OPTIONS": {"MAX_WORKERS": 4, "MAX_RESULTS": 1000, "SHUTDOWN_TIMEOUT": 10},
    }
}
