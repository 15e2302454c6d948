"""Settings for the docs' executed examples: the test suite's databases, this app.

Connections are configured as in production: persistent, with health checks.
"""

import copy

from tests.settings import DATABASES as TEST_DATABASES
from tests.settings import DEFAULT_AUTO_FIELD, SECRET_KEY, USE_TZ

__all__ = ["DATABASES", "DEFAULT_AUTO_FIELD", "INSTALLED_APPS", "SECRET_KEY", "USE_TZ"]

INSTALLED_APPS = ["cookbook"]
DATABASES = copy.deepcopy(TEST_DATABASES)
for database in DATABASES.values():
    database["CONN_MAX_AGE"] = 60
    database["CONN_HEALTH_CHECKS"] = True
