"""The optional Django app: ``INSTALLED_APPS = [..., "django_thread"]``.

The classes and :func:`~django_thread.unit_of_work` work without it. Installed, it adds
two things: system checks on the connection settings (``manage.py check``), and
closing the connections of *every* thread when it ends, not only the threads that ran
a unit of work (see ``_connections._remember``, which asks whether the app is
installed on each connect, so ``modify_settings`` in tests turns it on and off).
"""

from __future__ import annotations

from django.apps import AppConfig


class DjangoThreadConfig(AppConfig):
    name = "django_thread"
    verbose_name = "django-thread"

    def ready(self) -> None:
        from django_thread import checks  # noqa: F401, PLC0415 - registers the checks
