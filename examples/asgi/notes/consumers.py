import json

from channels.generic.websocket import AsyncWebsocketConsumer
from django.db import DatabaseError

from notes.bridges import BRIDGES
from notes.models import Note


class CountConsumer(AsyncWebsocketConsumer):
    """Answers every message with the number of notes, read through the URL's bridge."""

    async def receive(self, text_data=None, bytes_data=None):
        bridge = BRIDGES[self.scope["url_route"]["kwargs"]["bridge"]]
        try:
            notes = await bridge(Note.objects.count)()
        except DatabaseError as exc:
            await self.send(json.dumps({"error": str(exc)}))
        else:
            await self.send(json.dumps({"count": notes}))
