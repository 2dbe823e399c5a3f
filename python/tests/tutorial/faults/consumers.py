"""Plain Channels consumers that misbehave, for the failure tests."""

import asyncio

from channels.generic.websocket import AsyncWebsocketConsumer, JsonWebsocketConsumer


class Boom(AsyncWebsocketConsumer):
    """Raises on the first frame."""

    async def connect(self):
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        raise RuntimeError(f"boom: {text_data}")


class SlowAccept(AsyncWebsocketConsumer):
    """Takes 3 s to accept."""

    async def connect(self):
        await asyncio.sleep(3)
        await self.accept()


class WhoAmI(JsonWebsocketConsumer):
    """A sync consumer: tells its channel, answers its scope, and forwards
    layer messages sent to `self.channel_name` from elsewhere."""

    def connect(self):
        self.accept()
        self.send_json({"channel": self.channel_name})

    def receive_json(self, content):
        user = self.scope["user"]
        self.send_json(
            {
                "path": self.scope["path"],
                "query": self.scope["query_string"].decode(),
                "authenticated": bool(user.is_authenticated),
                "subprotocols": self.scope["subprotocols"],
                "has_client": self.scope["client"] is not None,
            }
        )

    def echo_back(self, event):
        self.send_json({"echo": event["content"]})
