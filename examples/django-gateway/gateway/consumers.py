"""The worker behind channels-server (`--forward-channel gateway.events`):
an ordinary Channels AsyncConsumer, run by `python manage.py runworker
gateway.events`. It gets every browser frame that is not a protocol frame
as `websocket.receive` (with `reply_channel` and `user`), plus
`websocket.connect` and `websocket.disconnect`, and answers through the
channel layer; channels-server holds the sockets.

Frames it understands (JSON text): `{"action": "echo", "text": T}` (answered
to that connection only) and `{"action": "shout", "text": T}` (a
`group_send` to demo.room: every subscribed browser, on every server).
"""

import json
import logging

from channels.consumer import AsyncConsumer

from .tokens import ROOM

logger = logging.getLogger(__name__)


class GatewayWorker(AsyncConsumer):
    """One instance serves every connection: state would be keyed by reply_channel."""

    async def websocket_connect(self, event):
        await self.reply(event, {"event": "welcome", "user": event["user"]})

    async def websocket_receive(self, event):
        if event.get("text") is None:
            await self.reply(event, {"event": "error", "error": "send JSON text frames"})
            return
        try:
            frame = json.loads(event["text"])
        except ValueError:
            frame = None
        if not isinstance(frame, dict):
            await self.reply(event, {"event": "error", "error": "not a JSON object"})
            return
        action = frame.get("action")
        if action == "echo":
            await self.reply(event, {"event": "echo", "text": frame.get("text"), "user": event["user"]})
        elif action == "shout":
            await self.channel_layer.group_send(
                ROOM, {"type": "demo.message", "text": frame.get("text"), "from": event["user"]}
            )
        else:
            await self.reply(event, {"event": "error", "error": f"unknown action {action!r}"})

    async def websocket_disconnect(self, event):
        logger.info("user %s left (close code %s)", event["user"], event["code"])

    async def reply(self, event, payload):
        """Sends `payload` to the connection the event came from, as a text frame."""
        await self.channel_layer.send(
            event["reply_channel"], {"type": "websocket.send", "text": json.dumps(payload)}
        )
