#!/usr/bin/env python3
"""Push a notification to Rust-held sockets from Python, the Django/Celery way.

In a Django project this is three lines in a view or a Celery task::

    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    async_to_sync(get_channel_layer().group_send)(
        "user.42", {"type": "notify", "id": "...", "title": "Your export is ready"}
    )

with ``CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
"CONFIG": {"hosts": ["redis://127.0.0.1:6379"]}}}`` in settings. This script builds the same
``RedisChannelLayer`` directly, so no Django project is needed. The Rust ``notifications``
server (``--layer redis`` on the same Redis and prefix) has every socket of user 42 in group
``user.42``; its consumer handles ``notify`` messages, counts them unread and forwards them.

Usage (with the interop venv made by ``scripts/install-deps.sh``)::

    target/interop-venv/bin/python examples/notifications/producer.py --user 42 --title Hi
    target/interop-venv/bin/python examples/notifications/producer.py --all --title "Deploy at 5"

Prints one JSON line: ``{"group": ..., "id": ...}``.
"""

import argparse
import json
import uuid

from asgiref.sync import async_to_sync
from channels_redis.core import RedisChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--user", help="user id: sends to group user.<id>")
    target.add_argument("--all", action="store_true", help="send to group broadcast")
    parser.add_argument("--title", required=True)
    parser.add_argument("--body", default="")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument("--prefix", default="asgi", help="the server's --redis-prefix")
    parser.add_argument(
        "--pubsub",
        action="store_true",
        help="use RedisPubSubChannelLayer (server started with --layer redis-pubsub)",
    )
    args = parser.parse_args()

    layer_class = RedisPubSubChannelLayer if args.pubsub else RedisChannelLayer
    layer = layer_class(hosts=[args.redis_url], prefix=args.prefix)
    group = "broadcast" if args.all else f"user.{args.user}"
    message = {
        "type": "notify",
        "id": str(uuid.uuid4()),
        "title": args.title,
        "body": args.body,
    }
    # The sync call a Django view or a Celery task makes.
    async_to_sync(layer.group_send)(group, message)
    print(json.dumps({"group": group, "id": message["id"]}))


if __name__ == "__main__":
    main()
