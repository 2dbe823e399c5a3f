#!/usr/bin/env python3
"""A Python peer for the Rust interop tests: drives the real channels_redis.

It creates one channels_redis layer (core ``RedisChannelLayer`` or
``RedisPubSubChannelLayer``) and runs layer operations given as JSON, printing
results as JSON. Messages travel as *tagged JSON* so the Rust side can compare
them exactly, types included:

* ``bytes``  -> ``{"$bytes": "<hex>"}``
* ``dict``   -> ``{"$map": [[key, value], ...]}`` (keeps order and non-str keys)
* ``list`` / ``tuple`` -> JSON array; ``str``, ``int``, ``float``, ``bool``,
  ``None`` -> themselves (floats always carry a ``.`` or exponent).

Usage::

    peer.py --layer core|pubsub --host redis://127.0.0.1:6379 [--host URL ...]
            [--prefix asgi] [--key SECRET ...] COMMAND

Commands:

``serve``
    Long-lived: reads one JSON request per line on stdin, answers one JSON line
    on stdout (``{"ok": true, "result": ...}`` or ``{"ok": false, "error": ...,
    "kind": ...}``); prints ``{"ready": true}`` first. Requests are
    ``{"op": OP, ...}`` with OP one of ``new_channel`` (prefix),
    ``send`` (channel, message), ``receive`` (channel, timeout),
    ``group_add`` / ``group_discard`` (group, channel), ``group_send``
    (group, message), ``flush``, ``serialize`` (message -> hex),
    ``deserialize`` (hex -> message), ``zrange`` (key -> hex members, core
    layer, first host), ``zadd`` (key, hex member; raw ZADD), ``quit``.
    Channels created here stay owned by this process, as with a real
    Django Channels worker.

``new-channel [--channel-prefix P]``, ``send CHANNEL MESSAGE_JSON``,
``receive CHANNEL [--timeout S]``, ``group-send GROUP MESSAGE_JSON``
    One-shot versions (a pub/sub channel made by ``new-channel`` dies with the
    process, so use ``serve`` for anything that must keep receiving).
"""

import argparse
import asyncio
import binascii
import json
import sys
import time


def tag(value):
    """Python value -> tagged JSON value."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, (bytes, bytearray)):
        return {"$bytes": binascii.hexlify(bytes(value)).decode("ascii")}
    if isinstance(value, (list, tuple)):
        return [tag(item) for item in value]
    if isinstance(value, dict):
        return {"$map": [[tag(k), tag(v)] for k, v in value.items()]}
    raise TypeError(f"cannot tag a {type(value).__name__}: {value!r}")


def untag(value):
    """Tagged JSON value -> Python value."""
    if isinstance(value, list):
        return [untag(item) for item in value]
    if isinstance(value, dict):
        if set(value) == {"$bytes"}:
            return binascii.unhexlify(value["$bytes"])
        if set(value) == {"$map"}:
            return {untag(k): untag(v) for k, v in value["$map"]}
        raise ValueError(f"untagged JSON object: {value!r}")
    return value


def make_layer(args):
    kwargs = {"hosts": list(args.host), "prefix": args.prefix}
    if args.key:
        kwargs["symmetric_encryption_keys"] = list(args.key)
    if args.layer == "core":
        from channels_redis.core import RedisChannelLayer

        return RedisChannelLayer(**kwargs)
    from channels_redis.pubsub import RedisPubSubChannelLayer

    return RedisPubSubChannelLayer(**kwargs)


async def raw_redis(args):
    from redis import asyncio as aioredis

    return aioredis.Redis.from_url(args.host[0])


async def run_op(layer, args, request):
    op = request["op"]
    if op == "new_channel":
        prefix = request.get("prefix")
        if prefix is None:
            return await layer.new_channel()
        return await layer.new_channel(prefix)
    if op == "send":
        await layer.send(request["channel"], untag(request["message"]))
        return None
    if op == "receive":
        wait = float(request.get("timeout", 5.0))
        message = await asyncio.wait_for(layer.receive(request["channel"]), wait)
        return tag(message)
    if op == "group_add":
        await layer.group_add(request["group"], request["channel"])
        return None
    if op == "group_discard":
        await layer.group_discard(request["group"], request["channel"])
        return None
    if op == "group_send":
        await layer.group_send(request["group"], untag(request["message"]))
        return None
    if op == "flush":
        await layer.flush()
        return None
    if op == "serialize":
        return binascii.hexlify(layer.serialize(untag(request["message"]))).decode()
    if op == "deserialize":
        return tag(layer.deserialize(binascii.unhexlify(request["hex"])))
    if op == "zrange":
        redis = await raw_redis(args)
        try:
            members = await redis.zrange(request["key"], 0, -1)
        finally:
            await redis.aclose()
        return [binascii.hexlify(m).decode() for m in members]
    if op == "zadd":
        redis = await raw_redis(args)
        try:
            member = binascii.unhexlify(request["hex"])
            await redis.zadd(request["key"], {member: time.time()})
            await redis.expire(request["key"], 60)
        finally:
            await redis.aclose()
        return None
    raise ValueError(f"unknown op {op!r}")


def answer(payload):
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


async def serve(layer, args):
    loop = asyncio.get_running_loop()
    answer({"ready": True, "layer": args.layer})
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        try:
            request = json.loads(line)
        except ValueError as error:
            answer({"ok": False, "kind": "BadRequest", "error": str(error)})
            continue
        if request.get("op") == "quit":
            answer({"ok": True, "result": None})
            break
        try:
            result = await run_op(layer, args, request)
        except asyncio.TimeoutError:
            answer({"ok": False, "kind": "Timeout", "error": "receive timed out"})
        except Exception as error:  # report every failure to the Rust side
            answer({"ok": False, "kind": type(error).__name__, "error": str(error)})
        else:
            answer({"ok": True, "result": result})
    await close_layer(layer, args)


async def close_layer(layer, args):
    """Releases the layer's connections (pub/sub: flush closes them)."""
    if args.layer == "core":
        await layer.close_pools()
    else:
        await layer.flush()


async def one_shot(layer, args):
    if args.command == "new-channel":
        request = {"op": "new_channel", "prefix": args.channel_prefix}
    elif args.command == "send":
        request = {"op": "send", "channel": args.channel, "message": json.loads(args.message)}
    elif args.command == "receive":
        request = {"op": "receive", "channel": args.channel, "timeout": args.timeout}
    elif args.command == "group-send":
        request = {"op": "group_send", "group": args.group, "message": json.loads(args.message)}
    else:
        raise SystemExit(f"unknown command {args.command}")
    try:
        result = await run_op(layer, args, request)
    finally:
        await close_layer(layer, args)
    print(json.dumps(result))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layer", choices=["core", "pubsub"], required=True)
    parser.add_argument("--host", action="append", required=True, help="Redis URL (repeat to shard)")
    parser.add_argument("--prefix", default="asgi")
    parser.add_argument("--key", action="append", help="symmetric encryption key (repeatable)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve")
    new_channel = commands.add_parser("new-channel")
    new_channel.add_argument("--channel-prefix", default=None)
    send = commands.add_parser("send")
    send.add_argument("channel")
    send.add_argument("message", help="tagged JSON message")
    receive = commands.add_parser("receive")
    receive.add_argument("channel")
    receive.add_argument("--timeout", type=float, default=5.0)
    group_send = commands.add_parser("group-send")
    group_send.add_argument("group")
    group_send.add_argument("message", help="tagged JSON message")
    return parser.parse_args(argv)


async def main(argv):
    args = parse_args(argv)
    layer = make_layer(args)
    if args.command == "serve":
        await serve(layer, args)
    else:
        await one_shot(layer, args)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
