"""The tutorial chat behind two channels-server processes and two workers,
on the core and the pub/sub layer; direct messages, scope, failures."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import Cluster, Process

WAIT = 15.0


class Client:
    """A WebSocket client that keeps every frame it receives."""

    def __init__(self, name: str, ws: ClientConnection):
        self.name = name
        self.ws = ws
        self.frames: list[Any] = []
        self.close_code: int | None = None
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, name: str, url: str, **kwargs: Any) -> Client:
        ws = await asyncio.wait_for(connect(url, open_timeout=WAIT, **kwargs), WAIT)
        return cls(name, ws)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.frames.append(json.loads(raw))
                self._poke()
        except ConnectionClosed:
            pass
        self.close_code = self.ws.close_code if self.ws.close_code is not None else 1006
        self._poke()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: {what} not seen within {timeout} s; "
                                     f"frames {self.frames}, close {self.close_code}")
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    def chat(self) -> list[str]:
        return [f["message"] for f in self.frames if isinstance(f, dict) and "message" in f]

    async def say(self, text: str) -> None:
        await self.ws.send(json.dumps({"message": text}))

    async def closed(self, timeout: float = WAIT) -> int:
        await self.wait(lambda: self.close_code is not None, "close", timeout)
        assert self.close_code is not None
        return self.close_code

    async def close(self) -> None:
        await self.ws.close()
        await self._reader


async def chat_round(speaker: Client, room: list[Client], text: str) -> None:
    """``speaker`` says ``text``; everyone in ``room`` receives it."""
    await speaker.say(text)
    for client in room:
        await client.wait(lambda c=client: text in c.chat(), f"{text!r}")


def assert_exactly_once(clients: list[Client], texts: list[str]) -> None:
    for client in clients:
        counts = Counter(client.chat())
        assert all(counts[t] == 1 for t in texts), f"{client.name} got {counts}"
        assert set(counts) <= set(texts), f"{client.name} got foreign messages {counts}"


def start(cluster: Cluster) -> None:
    cluster.start_server()
    cluster.start_server()
    cluster.start_worker()
    cluster.start_worker()
    cluster.wait_workers(2)


@pytest.mark.parametrize("layer", ["core", "pubsub"])
def test_tutorial_chat_across_servers_and_a_worker_killed(
    cluster_factory: Callable[[str], Cluster], layer: str
) -> None:
    cluster = cluster_factory(layer)
    start(cluster)
    one, two = cluster.servers

    async def scenario() -> None:
        lobby_url = "/ws/chat/lobby/"
        a = await Client.open("a@1", one.url(lobby_url))
        b = await Client.open("b@2", two.url(lobby_url))
        c = await Client.open("c@1", one.url(lobby_url))
        d = await Client.open("d@2", two.url(lobby_url))
        other = await Client.open("e@1", one.url("/ws/chat/other/"))
        lobby = [a, b, c, d]
        said = []
        for speaker in lobby:
            text = f"hello from {speaker.name}"
            await chat_round(speaker, lobby, text)
            said.append(text)
        await chat_round(other, [other], "alone in other")
        # A last round: anything duplicated would have arrived by now.
        await chat_round(a, lobby, "sentinel")
        said.append("sentinel")
        assert_exactly_once(lobby, said)
        assert other.chat() == ["alone in other"]

        # SIGKILL one worker mid-chat: its connections close with 4005,
        # the others keep chatting.
        victim = cluster.workers[0]
        victim.stop(signal.SIGKILL)
        everyone = lobby + [other]
        # Each gateway drops the worker after 5 missed heartbeats (2.5 s)
        # and then tells every connection it served: count them.
        cluster.wait_workers(1)
        lost = sum(int(s.metric("channels_asgi_worker_lost_total")) for s in cluster.servers)
        assert lost >= 1
        deadline = time.monotonic() + WAIT
        while sum(c.close_code is not None for c in everyone) < lost:
            assert time.monotonic() < deadline, [(c.name, c.close_code) for c in everyone]
            await asyncio.sleep(0.05)
        gone = [c for c in everyone if c.close_code is not None]
        alive = [c for c in lobby if c.close_code is None]
        assert gone, "no connection was closed after its worker was killed"
        assert all(c.close_code == 4005 for c in gone), [(c.name, c.close_code) for c in gone]
        assert alive, "every lobby connection was on the killed worker"
        assert {c.name[-1] for c in alive} == {"1", "2"}, [c.name for c in alive]
        before = {c.name: len(c.chat()) for c in alive}
        late = await Client.open("f@2", two.url(lobby_url))
        survivors = alive + [late]
        after = []
        for speaker in survivors:
            text = f"still here {speaker.name}"
            await chat_round(speaker, survivors, text)
            after.append(text)
        for client in alive:
            assert Counter(client.chat()[before[client.name]:]) == Counter(after), client.name
        assert Counter(late.chat()) == Counter(after)
        for client in survivors:
            await client.close()

    asyncio.run(scenario())


def test_direct_messages_scope_failures_and_a_quiet_channel(
    cluster_factory: Callable[[str], Cluster], redis_url: str
) -> None:
    cluster = cluster_factory("core")
    cluster.start_server()
    worker = cluster.start_worker()
    cluster.wait_workers(1)
    server = cluster.servers[0]

    async def scenario() -> None:
        from channels_redis.core import RedisChannelLayer

        # scope: path, query string, subprotocols, client, an anonymous user.
        me = await Client.open("whoami", server.url("/ws/whoami/?x=1%202"),
                               subprotocols=["chat.v2"])
        await me.wait(lambda: len(me.frames) >= 1, "channel name")
        channel = me.frames[0]["channel"]
        assert re.fullmatch(r"specific\.[^!]+![A-Za-z0-9]+", channel), channel
        await me.ws.send(json.dumps({"q": 1}))
        await me.wait(lambda: len(me.frames) >= 2, "scope")
        assert me.frames[1] == {"path": "/ws/whoami/", "query": "x=1%202",
                                "authenticated": False, "subprotocols": ["chat.v2"],
                                "has_client": True}
        # A layer message sent to self.channel_name from another process
        # reaches the consumer's handler in the worker.
        layer = RedisChannelLayer(hosts=[redis_url])
        await layer.send(channel, {"type": "echo.back", "content": "from outside"})
        await me.wait(lambda: {"echo": "from outside"} in me.frames, "echo")

        # A consumer that raises: 1011, and the worker keeps serving.
        boom = await Client.open("boom", server.url("/ws/boom/"))
        await boom.ws.send("explode")
        assert await boom.closed() == 1011
        # No route: the application raised before accepting, as Daphne: 500.
        assert await refused(server.url("/ws/no/such/route/")) == 500

        # A client that leaves during a slow accept leaves no instance behind.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(connect(server.url("/ws/slow/")), 0.5)
        worker.wait_for(lambda lines: any("ended (/ws/slow/)" in l for l in lines), 10,
                        "the slow instance ended")

        # Quiet for longer than redis-py's default socket_timeout (5 s):
        # the worker is still there and serving (channels_redis issue 422).
        await asyncio.sleep(6)
        assert worker.popen.poll() is None, worker.output()
        await me.ws.send(json.dumps({"q": 2}))
        await me.wait(lambda: len([f for f in me.frames if "path" in f]) >= 2, "after idle")
        room = [await Client.open(n, server.url("/ws/chat/quiet/")) for n in ("q1", "q2")]
        await chat_round(room[0], room, "after a quiet spell")
        await me.close()
        layer_close = getattr(layer, "close_pools", None)
        if layer_close is not None:
            await layer_close()

    asyncio.run(scenario())
    output = worker.output()
    assert "application raised" in output and "boom: explode" in output
    assert server.metric("channels_asgi_events_total") > 0


async def refused(url: str) -> int:
    """The HTTP status an upgrade to ``url`` is refused with."""
    with pytest.raises(InvalidStatus) as refusal:
        await asyncio.wait_for(connect(url, open_timeout=WAIT), WAIT)
    return int(refusal.value.response.status_code)


@pytest.mark.parametrize("layer", ["core", "pubsub"])
def test_the_handshake_waits_for_the_application(
    cluster_factory: Callable[[str], Cluster], layer: str
) -> None:
    """As under Daphne: 101 only once the application accepted (with its
    subprotocol), HTTP 403 for a close in ``connect``."""
    cluster = cluster_factory(layer)
    server = cluster.start_server()
    cluster.start_worker()
    cluster.wait_workers(1)

    async def scenario() -> None:
        assert await refused(server.url("/ws/refuse/")) == 403

        chosen = await Client.open("protocol", server.url("/ws/protocol/"),
                                   subprotocols=["chat.v1", "chat.v2"])
        assert chosen.ws.subprotocol == "chat.v2"
        await chosen.close()

        # The application joins its group 0.5 s into connect(): a client
        # answered 101 before that would miss what the room says at once.
        url = server.url("/ws/slowjoin/room/")
        first = await Client.open("first", url)
        await chat_round(first, [first], "first here")
        second = await Client.open("second", url)
        await first.say("right after the handshake")
        await second.say("me too")
        for client in (first, second):
            await client.wait(
                lambda c=client: sorted(c.chat()) == sorted(
                    ["first here", "right after the handshake", "me too"][client is second:]),
                "every message since it joined")
        await first.close()
        await second.close()

    asyncio.run(scenario())
    assert server.metric("channels_asgi_rejected_total") == 1


def test_no_live_worker_closes_with_4006(cluster_factory: Callable[[str], Cluster]) -> None:
    cluster = cluster_factory("core")
    server = cluster.start_server()

    async def scenario() -> None:
        client = await Client.open("alone", server.url("/ws/chat/lobby/"))
        assert await client.closed() == 4006

    asyncio.run(scenario())
    assert server.metric("channels_asgi_no_worker_total") == 1


def test_a_worker_stopped_with_sigterm_closes_its_connections_at_once(
    cluster_factory: Callable[[str], Cluster],
) -> None:
    cluster = cluster_factory("pubsub")
    server = cluster.start_server()
    # Heartbeats every 5 s: only the worker's goodbye can close within 5 s.
    worker = cluster.start_worker(heartbeat=5.0)
    cluster.wait_workers(1)

    async def scenario() -> None:
        client = await Client.open("leaving", server.url("/ws/chat/bye/"))
        await chat_round(client, [client], "before the restart")
        worker.stop(signal.SIGTERM)
        assert worker.popen.returncode == 0, worker.output()
        assert await client.closed(timeout=5) == 4005

    asyncio.run(scenario())
    assert server.metric("channels_asgi_worker_lost_total") == 1
    assert server.metric("channels_asgi_workers") == 0
