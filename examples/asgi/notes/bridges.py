"""The bridges compared: asgiref's and Channels' against django_thread's."""

from __future__ import annotations

from asgiref.sync import sync_to_async as asgiref_sync_to_async
from channels.db import database_sync_to_async as channels_database_sync_to_async

from django_thread import database_sync_to_async, sync_to_async

# Each runs a sync ORM call from async code; only django_thread's makes each call a
# unit of work (health check before, tidy after) in the thread that runs it.
BRIDGES = {
    "asgiref": asgiref_sync_to_async,
    "channels": channels_database_sync_to_async,
    "django_thread": sync_to_async,
    "django_thread_channels_name": database_sync_to_async,
}
