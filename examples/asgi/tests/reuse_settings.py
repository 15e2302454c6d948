"""The project's settings with django-thread's ENGINE, as docs/howto/asgi.md has them."""

from project.settings import *  # noqa: F403
from project.settings import DATABASES

DATABASES["default"]["ENGINE"] = DATABASES["default"]["ENGINE"].replace(
    "django.db.backends.", "django_thread.backends."
)
# As many idle connections as requests a worker serves at once (the tests send 16).
DATABASES["default"].setdefault("OPTIONS", {})["keep"] = 16
