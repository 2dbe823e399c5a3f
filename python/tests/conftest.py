"""Fixtures: a private redis-server, channels-server processes (the real
binary from CHANNELS_SERVER_BIN) and worker processes
(`python -m channels_rust.worker`) serving the tutorial project."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TUTORIAL = HERE / "tutorial"
REPO = HERE.parent.parent
LISTENING = re.compile(r"listening on (\d+\.\d+\.\d+\.\d+:\d+)")
_names = itertools.count(1)


def server_bin() -> str:
    """The channels-server binary: CHANNELS_SERVER_BIN, else the debug build."""
    path = os.environ.get("CHANNELS_SERVER_BIN") or str(REPO / "target/debug/channels-server")
    if not os.access(path, os.X_OK):
        raise RuntimeError(
            f"no channels-server binary at {path}: build it "
            "(cargo build -p channels-server --all-features --bins) or set CHANNELS_SERVER_BIN"
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """A child process whose output (stdout and stderr) is read line by line."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None):
        self.args = args
        self.popen = subprocess.Popen(
            args,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[list[str]], object], timeout: float, what: str) -> object:
        """Waits until ``predicate(lines)`` is truthy; fails with the output."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                result = predicate(self.lines)
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and not predicate(self.lines)):
                    raise AssertionError(
                        f"{what}: not seen within {timeout} s (exit {self.popen.poll()}); "
                        f"output of {self.args}:\n" + "\n".join(self.lines[-60:])
                    )
                self._changed.wait(min(left, 0.2))

    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A private redis-server on a free port (never the machine's 6379)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (scripts/install-deps.sh installs it)")
    port = free_port()
    process = Process([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                       "--appendonly", "no"])
    process.wait_for(lambda lines: any("Ready to accept connections" in l for l in lines),
                     20, "redis-server ready")
    yield f"redis://127.0.0.1:{port}/0"
    process.stop()


class Server:
    """One channels-server process in gateway mode."""

    def __init__(self, process: Process, address: str):
        self.process = process
        self.address = address

    def url(self, path: str) -> str:
        return f"ws://{self.address}{path}"

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://{self.address}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def metric(self, name: str) -> float:
        for line in self.metrics().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"{name} not in /metrics")

    def wait_metric(self, name: str, value: float, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while True:
            seen = self.metric(name)
            if seen == value:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} is {seen}, not {value}, after {timeout} s\n"
                                     + self.process.output()[-4000:])
            time.sleep(0.1)


class Cluster:
    """Servers and workers sharing one Redis, one layer kind, one forward
    channel."""

    def __init__(self, redis_url: str, layer: str):
        self.redis_url = redis_url
        self.layer = layer
        self.forward = f"django{next(_names)}"
        self.servers: list[Server] = []
        self.workers: list[Process] = []

    def start_server(self) -> Server:
        kind = {"core": "redis", "pubsub": "redis-pubsub"}[self.layer]
        process = Process(
            [server_bin(), "--bind", "127.0.0.1:0", "--layer", kind, "--redis-url",
             self.redis_url, "--forward-channel", self.forward],
            env={"RUST_LOG": "info,channels_server=debug", "NO_COLOR": "1"},
        )
        found = process.wait_for(
            lambda lines: next((m.group(1) for l in lines if (m := LISTENING.search(l))), None),
            30, "listening on")
        server = Server(process, str(found))
        self.servers.append(server)
        return server

    def start_worker(self, heartbeat: float = 0.5) -> Process:
        process = Process(
            [sys.executable, "-m", "channels_rust.worker", "mysite.asgi:application",
             "--channel", self.forward, "--heartbeat", str(heartbeat), "--log-level", "DEBUG"],
            env={
                "DJANGO_SETTINGS_MODULE": "mysite.settings",
                "CHAT_LAYER": self.layer,
                "CHAT_REDIS_URL": self.redis_url,
                "PYTHONPATH": str(TUTORIAL),
            },
            cwd=TUTORIAL,
        )
        process.wait_for(lambda lines: any("worker channel" in l for l in lines), 30,
                         "worker started")
        self.workers.append(process)
        return process

    def wait_workers(self, count: int) -> None:
        for server in self.servers:
            server.wait_metric("channels_asgi_workers", count)

    def stop(self) -> None:
        for process in self.workers:
            process.stop(signal.SIGKILL)
        for server in self.servers:
            server.process.stop()


@pytest.fixture
def cluster_factory(redis_url: str) -> Iterator[Callable[[str], Cluster]]:
    clusters: list[Cluster] = []

    def make(layer: str) -> Cluster:
        cluster = Cluster(redis_url, layer)
        clusters.append(cluster)
        return cluster

    yield make
    for cluster in clusters:
        cluster.stop()
