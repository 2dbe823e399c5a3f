"""Plain Channels consumers that misbehave, for the failure tests."""

import asyncio

from channels.generic.websocket import AsyncWebsocketConsumer, JsonWebsocketConsumer

from chat.consumers import ChatConsumer


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


class Refuse(AsyncWebsocketConsumer):
    """Closes in connect, before accepting: Daphne answers HTTP 403."""

    async def connect(self):
        await self.close()


class Protocol(AsyncWebsocketConsumer):
    """Accepts with the last subprotocol the client offered."""

    async def connect(self):
        await self.accept(subprotocol=self.scope["subprotocols"][-1])


class SlowJoin(ChatConsumer):
    """The tutorial's chat, joining its group 0.5 s into connect: a client
    told it is connected before that would miss what is said meanwhile."""

    async def connect(self):
        await asyncio.sleep(0.5)
        await super().connect()
