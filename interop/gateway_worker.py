"""A Django Channels worker behind the gateway (`channels-server
--forward-channel NAME`): the real `channels.worker.Worker` with a
`ChannelNameRouter` and an `AsyncConsumer`, over the real `channels_redis`.
It is what `python manage.py runworker NAME` runs in a Django project; the
gateway's test (server/tests/gateway_worker.rs) starts it against a test
redis-server.

On `websocket.connect` it adds the connection to the group `worker.room` and
greets it; it answers each text frame with an echo, each binary frame with
its bytes reversed, and the text `broadcast` with a `group_send` to
`worker.room`; it prints each `websocket.disconnect` as a JSON line.

    python interop/gateway_worker.py --redis-url redis://127.0.0.1:6379 \
        --prefix asgi --channel gateway.events
"""

import argparse
import json
import sys

import django
from django.conf import settings

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--redis-url", required=True)
parser.add_argument("--prefix", default="asgi")
parser.add_argument("--channel", required=True)
args = parser.parse_args()

settings.configure(
    INSTALLED_APPS=["channels"],
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # socket_timeout=None: redis-py's default read timeout would
                # abort the worker's blocking receive (BZPOPMIN) after a quiet
                # spell and kill the worker (channels_redis issue 422).
                "hosts": [{"address": args.redis_url, "socket_timeout": None}],
                "prefix": args.prefix,
            },
        }
    },
)
django.setup()

from channels.consumer import AsyncConsumer  # noqa: E402 (needs django.setup)
from channels.layers import get_channel_layer  # noqa: E402
from channels.routing import ChannelNameRouter  # noqa: E402
from channels.worker import Worker  # noqa: E402

ROOM = "worker.room"


class Backend(AsyncConsumer):
    """One instance serves every connection: state is keyed by reply_channel."""

    async def websocket_connect(self, event):
        await self.channel_layer.group_add(ROOM, event["reply_channel"])
        await self.reply(
            event,
            {"event": "connected", "user": event["user"], "path": event["path"],
             "has_host_header": any(name == "host" for name, _ in event["headers"])},
        )

    async def websocket_receive(self, event):
        text = event.get("text")
        if text == "broadcast":
            await self.channel_layer.group_send(
                ROOM, {"type": "worker.news", "text": f"from {event['user']} via the worker"}
            )
        elif text is not None:
            await self.reply(event, {"event": "echo", "text": text, "user": event["user"]})
        else:
            await self.channel_layer.send(
                event["reply_channel"],
                {"type": "websocket.send", "bytes": bytes(reversed(event["bytes"]))},
            )

    async def websocket_disconnect(self, event):
        print(json.dumps({"disconnect": event["code"], "user": event["user"]}), flush=True)

    async def reply(self, event, payload):
        await self.channel_layer.send(
            event["reply_channel"], {"type": "websocket.send", "text": json.dumps(payload)}
        )


application = ChannelNameRouter({args.channel: Backend.as_asgi()})
print("worker ready", flush=True)
sys.stdout.flush()
Worker(application=application, channels=[args.channel], channel_layer=get_channel_layer()).run()
