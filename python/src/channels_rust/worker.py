"""The ASGI worker: runs a Django Channels application for the WebSocket
connections a channels-server gateway passes through.

Protocol (docs/protocol.md, "ASGI workers"):

- The worker makes a channel of its own (``new_channel``) and announces it
  every ``--heartbeat`` seconds with ``group_send`` to the group
  ``NAME.workers`` (``asgi.worker.heartbeat``, ``channel``, ``interval``).
  Every gateway joins that group and keeps a table of live workers.
- A gateway sends a connection's ``websocket.connect`` to one live worker's
  channel and every later event of the connection (``websocket.receive``,
  ``websocket.disconnect``, ``asgi.dispatch`` for layer messages sent to the
  connection's channel) to the same worker.
- What the application sends goes to the connection's ``reply_channel``.
- Inside the worker, ``self.channel_name`` is the connection's channel on the
  gateway; ``group_add(group, self.channel_name)`` joins a worker-local alias
  channel of the group instead, so a group message reaches each worker once
  and is dispatched here to every local consumer in the group.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import importlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

logger = logging.getLogger("channels_rust.worker")

Message = dict[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Application = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Close code when the application raised.
APP_ERROR = 1011
#: Close code when the application closed (or denied) before accepting and
#: gave no code. The gateway answers the upgrade with HTTP 403, as Daphne,
#: and hands the code back in ``websocket.disconnect``.
REJECTED = 4403
#: Seconds an application instance may keep running after its client left.
DISCONNECT_GRACE = 5.0
#: Layer operations (send, group_add, ...) in flight at once. redis-py's
#: pool holds 100 connections by default and raises when they are all busy
#: (``MaxConnectionsError``): a thousand consumers connecting at once would
#: otherwise fail most of their calls.
LAYER_CONCURRENCY = 64
#: Replies in one ``asgi.batch`` message at most.
BATCH_ITEMS = 256
#: Replies waiting for the flusher before the application's sends wait too.
MAX_PENDING = 10_000

#: The connection whose application instance runs in this context.
_current: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "channels_rust_connection", default=None
)


def heartbeat_group(channel: str) -> str:
    """The group heartbeats go to for the gateway's ``--forward-channel``."""
    return f"{channel}.workers"


@dataclass(eq=False)
class Connection:
    """One connection served by this worker."""

    channel: str
    path: str = ""
    #: The gateway process's registry channel, for batched replies.
    gateway: str | None = None
    events: asyncio.Queue[Message] = field(default_factory=asyncio.Queue)
    inbox: asyncio.Queue[Message] = field(default_factory=asyncio.Queue)
    groups: set[str] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    accepted: bool = False
    closed: bool = False
    client_gone: bool = False


@dataclass(eq=False)
class GroupAlias:
    """This worker's one channel in a group, and the local members."""

    channel: str
    members: set[Connection] = field(default_factory=set)
    joined: bool = False
    pump: asyncio.Task[None] | None = None


class WorkerLayer:
    """The channel layer the application sees inside the worker.

    It wraps the real layer: ``new_channel`` answers the current connection's
    gateway channel, ``receive`` on it reads what the worker dispatches to the
    connection, ``group_add``/``group_discard`` of a local connection act on
    the worker's alias channel of the group, ``send`` to a local connection
    is delivered in-process; the rest goes to the real layer.
    """

    def __init__(self, worker: Worker, real: Any) -> None:
        self._worker = worker
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def new_channel(self, prefix: str = "specific.") -> str:
        """The connection's channel inside an application instance."""
        channel = _current.get()
        if channel is not None:
            return channel
        result: str = await self._real.new_channel(prefix)
        return result

    async def receive(self, channel: str) -> Message:
        """Layer messages for a local connection, else the real layer's."""
        connection = self._worker.connections.get(channel)
        if connection is not None:
            return await connection.inbox.get()
        result: Message = await self._real.receive(channel)
        return result

    async def send(self, channel: str, message: Message) -> None:
        """In-process for a local connection, else through the real layer."""
        connection = self._worker.connections.get(channel)
        if connection is not None:
            connection.inbox.put_nowait(dict(message))
            return
        async with self._worker.slots:
            await self._real.send(channel, message)

    async def group_add(self, group: str, channel: str) -> None:
        """A local connection joins through the worker's alias of ``group``."""
        connection = self._worker.connections.get(channel)
        if connection is None:
            async with self._worker.slots:
                await self._real.group_add(group, channel)
            return
        await self._worker.join(group, connection)

    async def group_discard(self, group: str, channel: str) -> None:
        """A local connection leaves through the worker's alias of ``group``."""
        connection = self._worker.connections.get(channel)
        if connection is None:
            async with self._worker.slots:
                await self._real.group_discard(group, channel)
            return
        await self._worker.leave(group, connection)

    async def group_send(self, group: str, message: Message) -> None:
        """Through the real layer: every worker's alias and every gateway
        channel in the group get it."""
        async with self._worker.slots:
            await self._real.group_send(group, message)


class Worker:
    """Serves ``app`` for the connections gateways send to this worker.

    ``real`` is the channels_redis layer of the Django settings; ``name`` the
    gateway's ``--forward-channel``.
    """

    def __init__(
        self, app: Application, real: Any, name: str, heartbeat: float = 1.0
    ) -> None:
        self.app = app
        self.real = real
        self.name = name
        self.heartbeat_interval = heartbeat
        self.channel = ""
        self.connections: dict[str, Connection] = {}
        self.groups: dict[str, GroupAlias] = {}
        self._group_lock = asyncio.Lock()
        #: Bounds the layer operations in flight (:data:`LAYER_CONCURRENCY`).
        self.slots = asyncio.Semaphore(LAYER_CONCURRENCY)
        #: Replies to batch, by gateway registry channel, in order.
        self._pending: dict[str, list[list[Any]]] = {}
        self._pending_count = 0
        self._flush_wanted = asyncio.Event()
        self._drained = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.layer = WorkerLayer(self, real)
        self._auth_installed: bool | None = None

    # -- running ---------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serves until ``stop`` is set, then says goodbye to the gateways."""
        self.channel = await self.real.new_channel()
        logger.info("worker channel %s, heartbeats to group %s every %.2f s",
                    self.channel, heartbeat_group(self.name), self.heartbeat_interval)
        await self._heartbeat_once()
        beats = asyncio.create_task(self._heartbeats())
        loop = asyncio.create_task(self._receive_loop())
        flusher = asyncio.create_task(self._flusher())
        await stop.wait()
        beats.cancel()
        loop.cancel()
        flusher.cancel()
        try:
            await self.real.group_send(
                heartbeat_group(self.name),
                {"type": "asgi.worker.leave", "channel": self.channel},
            )
        except Exception:  # noqa: BLE001 - leaving is best effort
            logger.exception("could not tell the gateways this worker leaves")
        for connection in list(self.connections.values()):
            if connection.task is not None:
                connection.task.cancel()
        for group in self.groups.values():
            if group.pump is not None:
                group.pump.cancel()

    async def _heartbeat_once(self) -> None:
        async with self.slots:
            await self._beat()

    async def _beat(self) -> None:
        await self.real.group_send(
            heartbeat_group(self.name),
            {
                "type": "asgi.worker.heartbeat",
                "channel": self.channel,
                "interval": self.heartbeat_interval,
                "pid": os.getpid(),
            },
        )

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self._heartbeat_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep beating through outages
                logger.exception("heartbeat failed; retrying")

    async def _receive(self, channel: str) -> Message:
        """``real.receive`` that survives a quiet channel.

        redis-py 8 aborts a blocking read after ``socket_timeout`` (5 s by
        default) with ``TimeoutError``, which channels_redis passes on
        (channels_redis issue 422): that is an idle channel, not an error, so
        receive again. Other errors back off and retry.
        """
        delay = 0.1
        while True:
            try:
                result: Message = await self.real.receive(channel)
                return result
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001
                if _is_timeout(error):
                    logger.debug("receive on %s timed out while idle; again", channel)
                    continue
                logger.warning("receive on %s failed (%r); retrying in %.1f s",
                               channel, error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _receive_loop(self) -> None:
        while True:
            message = await self._receive(self.channel)
            try:
                await self._on_event(message)
            except Exception:  # noqa: BLE001 - one bad event must not stop the worker
                logger.exception("could not handle %r", message.get("type"))

    async def _on_event(self, message: Message) -> None:
        kind = message.get("type")
        reply = message.get("reply_channel")
        if not isinstance(reply, str):
            logger.warning("event %r without a reply_channel; dropped", kind)
            return
        if kind == "websocket.connect":
            await self._open(reply, message)
            return
        connection = self.connections.get(reply)
        if connection is None:
            logger.debug("%s for unknown connection %s; dropped", kind, reply)
            return
        if kind == "websocket.receive":
            event: Message = {"type": "websocket.receive"}
            if message.get("bytes") is not None:
                event["bytes"] = message["bytes"]
            else:
                event["text"] = message.get("text")
            connection.events.put_nowait(event)
        elif kind == "websocket.disconnect":
            connection.client_gone = True
            connection.events.put_nowait(
                {"type": "websocket.disconnect", "code": message.get("code", 1000)}
            )
            self._spawn(self._reap(connection))
        elif kind == "asgi.dispatch":
            inner = message.get("message")
            if isinstance(inner, dict):
                connection.inbox.put_nowait(inner)
        else:
            logger.warning("unknown event %r; dropped", kind)

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reap(self, connection: Connection) -> None:
        """Cancels an instance still running :data:`DISCONNECT_GRACE` s after
        its client left (an application stuck in a slow accept, say)."""
        task = connection.task
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), DISCONNECT_GRACE)
        except asyncio.TimeoutError:
            logger.warning("application for %s still running %.0f s after its client left; cancelled",
                           connection.channel, DISCONNECT_GRACE)
            task.cancel()
        except BaseException:  # noqa: BLE001 - the instance's own end is handled elsewhere
            pass

    # -- one connection ---------------------------------------------------

    async def _open(self, reply: str, message: Message) -> None:
        if reply in self.connections:
            logger.warning("duplicate websocket.connect for %s; ignored", reply)
            return
        gateway = message.get("gateway")
        connection = Connection(reply, gateway=gateway if isinstance(gateway, str) else None)
        self.connections[reply] = connection
        # Queued first: events that come while the scope is built follow it.
        connection.events.put_nowait({"type": "websocket.connect"})
        try:
            scope = await self._scope(message)
        except Exception:  # noqa: BLE001 - the client gets 1011, the worker goes on
            logger.exception("could not build the scope of %s; closing it with %d",
                             reply, APP_ERROR)
            self.connections.pop(reply, None)
            connection.closed = True
            await self._reply(connection, {"type": "websocket.close", "code": APP_ERROR})
            return
        connection.path = str(scope["path"])
        context = contextvars.copy_context()
        context.run(_current.set, reply)

        async def receive() -> Message:
            return await connection.events.get()

        async def send(event: Message) -> None:
            await self._send(connection, event)

        task = asyncio.get_running_loop().create_task(
            self._instance(connection, scope, receive, send), context=context
        )
        connection.task = task
        logger.debug("connection %s opened on %s", reply, scope["path"])

    async def _instance(
        self, connection: Connection, scope: Scope, receive: Receive, send: Send
    ) -> None:
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            logger.debug("application for %s cancelled", connection.channel)
        except Exception:  # noqa: BLE001 - log it, close the connection, serve the others
            logger.exception("application raised for %s (%s); closing it with %d",
                             connection.channel, scope.get("path"), APP_ERROR)
            if not connection.client_gone and not connection.closed:
                connection.closed = True
                await self._reply(connection, {"type": "websocket.close", "code": APP_ERROR})
        finally:
            await self._forget(connection)

    async def _forget(self, connection: Connection) -> None:
        self.connections.pop(connection.channel, None)
        for group in list(connection.groups):
            await self.leave(group, connection)
        if not connection.client_gone and not connection.closed:
            # The application returned without closing: ASGI says close.
            connection.closed = True
            await self._reply(
                connection,
                {"type": "websocket.close", "code": 1000 if connection.accepted else REJECTED},
            )
        logger.debug("connection %s ended (%s)", connection.channel, connection.path)

    async def _send(self, connection: Connection, event: Message) -> None:
        kind = event.get("type")
        if kind == "websocket.accept":
            connection.accepted = True
            out: Message = {"type": "websocket.accept"}
            if event.get("subprotocol"):
                out["subprotocol"] = event["subprotocol"]
        elif kind == "websocket.send":
            out = {"type": "websocket.send"}
            if event.get("bytes") is not None:
                out["bytes"] = event["bytes"]
            else:
                out["text"] = event.get("text") or ""
        elif kind == "websocket.close":
            code = event.get("code")
            if not isinstance(code, int) or code is True:
                code = 1000 if connection.accepted else REJECTED
            connection.closed = True
            out = {"type": "websocket.close", "code": code}
            if event.get("reason"):
                out["reason"] = event["reason"]
        elif kind == "websocket.http.response.start":
            connection.closed = True
            out = {"type": "websocket.close", "code": REJECTED}
        elif kind == "websocket.http.response.body":
            return
        else:
            raise ValueError(f"an application may not send {kind!r} on a websocket")
        if connection.client_gone:
            return
        await self._reply(connection, out)

    async def _reply(self, connection: Connection, message: Message) -> None:
        if connection.gateway is not None:
            # Batched: one layer message per gateway process and flush, which
            # the gateway spreads over its connections (a group message to
            # N local consumers is not N sends from Python).
            while self._pending_count >= MAX_PENDING:
                drained = self._drained
                await drained.wait()
            self._pending.setdefault(connection.gateway, []).append(
                [connection.channel, message]
            )
            self._pending_count += 1
            self._flush_wanted.set()
            return
        try:
            async with self.slots:
                await self.real.send(connection.channel, message)
        except Exception as error:  # noqa: BLE001
            logger.warning("%s to %s not delivered: %r", message["type"], connection.channel, error)

    async def _flusher(self) -> None:
        """Sends the pending replies as ``asgi.batch`` messages, in order."""
        while True:
            await self._flush_wanted.wait()
            # Let the consumers woken with this one add theirs.
            await asyncio.sleep(0)
            self._flush_wanted.clear()
            pending, self._pending = self._pending, {}
            self._pending_count = 0
            drained, self._drained = self._drained, asyncio.Event()
            drained.set()
            for gateway, items in pending.items():
                for start in range(0, len(items), BATCH_ITEMS):
                    chunk = items[start:start + BATCH_ITEMS]
                    try:
                        async with self.slots:
                            await self.real.send(
                                gateway, {"type": "asgi.batch", "messages": chunk}
                            )
                    except Exception as error:  # noqa: BLE001
                        logger.warning("%d replies to gateway %s not delivered: %r",
                                       len(chunk), gateway, error)

    async def _scope(self, message: Message) -> Scope:
        raw_path = str(message.get("path") or "/")
        query = str(message.get("query_string") or "")
        headers = [
            (str(name).lower().encode("latin-1"), str(value).encode("latin-1", "replace"))
            for name, value in message.get("headers") or []
        ]
        client = message.get("client")
        scheme = "ws"
        for name, value in headers:
            if name == b"x-forwarded-proto" and value.strip() in (b"https", b"wss"):
                scheme = "wss"
        scope: Scope = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "scheme": scheme,
            "path": unquote(raw_path),
            "raw_path": raw_path.encode("latin-1", "replace"),
            "query_string": query.encode("latin-1", "replace"),
            "root_path": "",
            "headers": headers,
            "subprotocols": [str(p) for p in message.get("subprotocols") or []],
            "client": tuple(client) if isinstance(client, (list, tuple)) else None,
            "server": None,
            "extensions": {},
        }
        user = message.get("user")
        if isinstance(user, str):
            scope["gateway_user"] = user
        lazy = await self._user(user if isinstance(user, str) else None)
        if lazy is not None:
            scope["user"] = lazy
        return scope

    async def _user(self, sub: str | None) -> Any:
        """A ``UserLazyObject`` (what ``AuthMiddleware`` assigns onto)
        holding the token's user, or ``AnonymousUser``; ``None`` when
        ``django.contrib.auth`` is not installed."""
        if self._auth_installed is None:
            try:
                from django.apps import apps

                self._auth_installed = apps.is_installed("django.contrib.auth")
            except Exception:  # noqa: BLE001 - no Django configured
                self._auth_installed = False
        if not self._auth_installed:
            return None
        from channels.auth import UserLazyObject
        from channels.db import database_sync_to_async
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import AnonymousUser

        value: Any = AnonymousUser()
        if sub is not None:
            model = get_user_model()

            def find() -> Any:
                try:
                    return model._default_manager.filter(pk=sub).first()
                except (ValueError, TypeError):
                    return None

            value = await database_sync_to_async(find)() or AnonymousUser()
        lazy = UserLazyObject()
        lazy._wrapped = value
        return lazy

    # -- groups ------------------------------------------------------------

    async def join(self, group: str, connection: Connection) -> None:
        """Adds a local connection to ``group`` (the alias joins at first)."""
        async with self._group_lock:
            alias = self.groups.get(group)
            if alias is None:
                alias = GroupAlias(await self.real.new_channel())
                alias.pump = asyncio.create_task(self._pump(group, alias))
                self.groups[group] = alias
            alias.members.add(connection)
            connection.groups.add(group)
            if not alias.joined:
                async with self.slots:
                    await self.real.group_add(group, alias.channel)
                alias.joined = True

    async def leave(self, group: str, connection: Connection) -> None:
        """Removes a local connection from ``group`` (the alias leaves with
        the last one)."""
        async with self._group_lock:
            connection.groups.discard(group)
            alias = self.groups.get(group)
            if alias is None:
                return
            alias.members.discard(connection)
            if not alias.members and alias.joined:
                alias.joined = False
                try:
                    async with self.slots:
                        await self.real.group_discard(group, alias.channel)
                except Exception:  # noqa: BLE001
                    logger.exception("could not leave group %s", group)

    async def _pump(self, group: str, alias: GroupAlias) -> None:
        """Dispatches each message of ``group`` to every local member."""
        while True:
            message = await self._receive(alias.channel)
            for connection in list(alias.members):
                connection.inbox.put_nowait(dict(message))


def _is_timeout(error: BaseException) -> bool:
    try:
        import redis.exceptions
    except ImportError:  # pragma: no cover - channels_redis needs redis
        return isinstance(error, TimeoutError)
    return isinstance(error, (TimeoutError, redis.exceptions.TimeoutError))


def _no_socket_timeout(config: MutableMapping[str, Any]) -> None:
    """Sets ``socket_timeout: None`` on every Redis host of a CHANNEL_LAYERS
    entry that does not set one, so redis-py's default (5 s) cannot abort
    the layer's blocking reads (channels_redis issue 422)."""
    layer_config = config.setdefault("CONFIG", {})
    hosts = layer_config.get("hosts")
    if hosts is None:
        hosts = [("localhost", 6379)]
    if isinstance(hosts, (str, bytes)):
        hosts = [hosts]
    fixed: list[Any] = []
    for host in hosts:
        if isinstance(host, dict):
            entry = dict(host)
        elif isinstance(host, (list, tuple)):
            entry = {"host": host[0], "port": host[1]}
        else:
            entry = {"address": host}
        entry.setdefault("socket_timeout", None)
        fixed.append(entry)
    layer_config["hosts"] = fixed


def load_app(path: str) -> Application:
    """Imports ``module:attribute``."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise SystemExit(f"APP must be module:attribute, not {path!r}")
    module = importlib.import_module(module_name)
    app: Any = module
    for part in attribute.split("."):
        app = getattr(app, part)
    return app  # type: ignore[no-any-return]


async def serve(app_path: str, name: str, heartbeat: float, alias: str) -> None:
    """Loads the application and the channel layer, then serves until
    SIGINT or SIGTERM."""
    from channels.layers import channel_layers

    sys.path.insert(0, os.getcwd())
    app = load_app(app_path)
    config = channel_layers.configs.get(alias)
    if config is None:
        raise SystemExit(f"CHANNEL_LAYERS has no {alias!r} layer")
    _no_socket_timeout(config)
    real = channel_layers[alias]
    worker = Worker(app, real, name, heartbeat)
    channel_layers.backends[alias] = worker.layer
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await worker.run(stop)


def main(argv: list[str] | None = None) -> None:
    """``python -m channels_rust.worker APP --channel NAME``."""
    parser = argparse.ArgumentParser(
        prog="python -m channels_rust.worker",
        description="Serve a Django Channels ASGI application behind channels-server.",
    )
    parser.add_argument("app", metavar="APP", help="the ASGI application, module:attribute")
    parser.add_argument("--channel", required=True, metavar="NAME",
                        help="the gateway's --forward-channel")
    parser.add_argument("--heartbeat", type=float, default=1.0, metavar="SECONDS",
                        help="heartbeat interval; a gateway drops a worker silent for 5 intervals")
    parser.add_argument("--layer", default="default", metavar="ALIAS",
                        help="the CHANNEL_LAYERS entry to use (default: default)")
    parser.add_argument("--log-level", default=os.environ.get("CHANNELS_RUST_LOG", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        raise SystemExit("set DJANGO_SETTINGS_MODULE: the worker reads CHANNEL_LAYERS from it")
    if not 0.05 <= args.heartbeat <= 60:
        raise SystemExit("--heartbeat must be between 0.05 and 60 seconds")
    asyncio.run(serve(args.app, args.channel, args.heartbeat, args.layer))


if __name__ == "__main__":
    main()
