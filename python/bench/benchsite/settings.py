"""Settings of the benchmark project: one Channels consumer for the
websocket-shootout protocol, served by uvicorn or by channels_rust.worker
behind channels-server. BENCH_REDIS_URL and BENCH_LAYER (core, pubsub)."""

import os

SECRET_KEY = "bench-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["channels", "shootout"]
DATABASES: dict = {}
ROOT_URLCONF = "benchsite.urls"
USE_TZ = True
_BACKENDS = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": _BACKENDS[os.environ.get("BENCH_LAYER", "core")],
        "CONFIG": {
            "hosts": [{"address": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
                       "socket_timeout": None,
                       # redis-py's pool raises past 100 connections (default):
                       # a thousand consumers connecting at once need more.
                       "max_connections": int(os.environ.get("BENCH_MAX_CONNECTIONS", "1000"))}],
            "capacity": int(os.environ.get("BENCH_CAPACITY", "10000")),
        },
    }
}
