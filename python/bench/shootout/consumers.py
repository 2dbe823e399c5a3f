"""Hashrocket's websocket-shootout protocol as a plain Channels consumer:
echo comes back; broadcast goes to the group, and its sender also gets
broadcastResult."""

import json

from channels.generic.websocket import AsyncWebsocketConsumer

GROUP = "shootout"


class Shootout(AsyncWebsocketConsumer):
    async def connect(self):
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, close_code):
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        message = json.loads(text_data)
        if message.get("type") == "echo":
            await self.send(text_data=text_data)
        elif message.get("type") == "broadcast":
            payload = message.get("payload")
            frame = json.dumps({"type": "broadcast", "payload": payload})
            await self.channel_layer.group_send(GROUP, {"type": "shootout.broadcast", "frame": frame})
            await self.send(text_data=json.dumps({"type": "broadcastResult", "payload": payload}))

    async def shootout_broadcast(self, event):
        await self.send(text_data=event["frame"])
