"""ENGINE wrappers that reuse idle connections across threads (issue 24, Django #33497).

``"ENGINE": "django_thread.backends.postgresql"`` (or ``.mysql``, ``.sqlite3``): Django's
own backend, whose clean connections a thread gives back as django_thread closes them
at its end, for the next thread to take. The policy is in ``django_thread._keep``.
"""

from django_thread._keep import close_idle, idle_count

__all__ = ["close_idle", "idle_count"]
