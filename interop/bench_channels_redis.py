#!/usr/bin/env python3
"""Python channels_redis on a given Redis: the same measurements as the Rust
criterion benches (channels-redis/benches/redis_layer.rs, pubsub_layer.rs).

* ``round_trip``: ``send`` then ``receive`` of {"type": "chat.message",
  "text": "hello, world"} on one process-local channel (``new_channel()``),
  one after the other; ops/s and mean microseconds per round trip.
* ``group_send_1000``: one ``group_send`` to a group of 1,000 process-local
  channels of this process, timed until every member has received it; mean
  and median milliseconds over several rounds.

Prints one JSON line per layer. Example (a private server, no persistence)::

    redis-server --port 6399 --save "" --daemonize no &
    target/interop-venv/bin/python interop/bench_channels_redis.py \\
        --url redis://127.0.0.1:6399 --layer core --layer pubsub
"""

import argparse
import asyncio
import json
import statistics
import time
import uuid

MESSAGE = {"type": "chat.message", "text": "hello, world"}


def make_layer(kind, url, prefix):
    if kind == "core":
        from channels_redis.core import RedisChannelLayer

        return RedisChannelLayer(hosts=[url], prefix=prefix)
    from channels_redis.pubsub import RedisPubSubChannelLayer

    return RedisPubSubChannelLayer(hosts=[url], prefix=prefix)


async def close(kind, layer):
    if kind == "core":
        await layer.flush()
        await layer.close_pools()
    else:
        await layer.flush()


async def round_trip(layer, seconds, warm_up):
    channel = await layer.new_channel()
    deadline = time.perf_counter() + warm_up
    while time.perf_counter() < deadline:
        await layer.send(channel, MESSAGE)
        await asyncio.wait_for(layer.receive(channel), 5)
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        await layer.send(channel, MESSAGE)
        await asyncio.wait_for(layer.receive(channel), 5)
        count += 1
    elapsed = time.perf_counter() - started
    return {"ops_per_s": count / elapsed, "mean_us": elapsed / count * 1e6, "count": count}


async def group_send(layer, members, rounds):
    channels = []
    for _ in range(members):
        channel = await layer.new_channel()
        await layer.group_add("bench", channel)
        channels.append(channel)
    times = []
    for _ in range(rounds + 1):  # the first round warms up
        started = time.perf_counter()
        await layer.group_send("bench", MESSAGE)
        await asyncio.wait_for(
            asyncio.gather(*(layer.receive(channel) for channel in channels)), 60
        )
        times.append((time.perf_counter() - started) * 1e3)
    times = times[1:]
    return {
        "members": members,
        "rounds": rounds,
        "mean_ms": statistics.mean(times),
        "median_ms": statistics.median(times),
        "min_ms": min(times),
    }


async def bench(kind, args):
    import channels_redis

    prefix = f"bench{uuid.uuid4().hex[:8]}"
    layer = make_layer(kind, args.url, prefix)
    try:
        trip = await round_trip(layer, args.seconds, args.warm_up)
        group = await group_send(layer, args.members, args.rounds)
    finally:
        await close(kind, layer)
    return {
        "implementation": "python-channels_redis",
        "version": getattr(channels_redis, "__version__", "?"),
        "layer": kind,
        "round_trip": trip,
        "group_send": group,
    }


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="Redis URL, e.g. redis://127.0.0.1:6399")
    parser.add_argument("--layer", action="append", choices=["core", "pubsub"])
    parser.add_argument("--seconds", type=float, default=3.0, help="round-trip measuring time")
    parser.add_argument("--warm-up", type=float, default=1.0)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    for kind in args.layer or ["core", "pubsub"]:
        print(json.dumps(await bench(kind, args)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
