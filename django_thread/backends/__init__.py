"""ENGINE wrappers that reuse idle connections across threads (see ``_keep``).

``"ENGINE": "django_thread.backends.postgresql"`` (or ``.mysql``, ``.sqlite3``): Django's
own backend, whose connections a thread gives back as it ends, for the next thread.
"""
