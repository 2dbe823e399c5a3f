"""Settings of the gateway example: a Django project with no database whose
channel layer is the Redis that `channels-server` uses too. Everything a
deployment changes comes from the environment:

- REDIS_URL (default redis://127.0.0.1:6379/0) and CHANNEL_LAYER (`core`
  for channels_redis.core.RedisChannelLayer, the default, or `pubsub` for
  channels_redis.pubsub.RedisPubSubChannelLayer; channels-server's
  `--layer redis` or `--layer redis-pubsub` must match), CHANNEL_LAYER_PREFIX
  (default `asgi`, channels-server's `--redis-prefix`);
- DJANGO_SECRET_KEY: also channels-server's `--django-secret-key`, which
  verifies the tokens this project signs;
- GATEWAY_URL: where browsers reach channels-server (default
  ws://127.0.0.1:8001/ws); GATEWAY_TOKEN_SALT (default `channels.gateway`,
  channels-server's `--django-salt`); GATEWAY_FORWARD_CHANNEL (default
  `gateway.events`, its `--forward-channel`).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-change-me-and-give-it-to-channels-server")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "channels",  # runworker
    "gateway",
]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "demo.urls"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
WSGI_APPLICATION = None
ASGI_APPLICATION = "demo.asgi.application"
DATABASES = {}  # none needed: users are named in the demo's token request
USE_TZ = True

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
LAYER_BACKENDS = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": LAYER_BACKENDS[os.environ.get("CHANNEL_LAYER", "core")],
        "CONFIG": {
            # socket_timeout=None: redis-py's default read timeout would abort
            # the worker's blocking receive after a quiet spell and kill
            # runworker (channels_redis issue 422).
            "hosts": [{"address": REDIS_URL, "socket_timeout": None}],
            "prefix": os.environ.get("CHANNEL_LAYER_PREFIX", "asgi"),
        },
    }
}

GATEWAY_URL = os.environ.get("GATEWAY_URL", "ws://127.0.0.1:8001/ws")
GATEWAY_TOKEN_SALT = os.environ.get("GATEWAY_TOKEN_SALT", "channels.gateway")
GATEWAY_TOKEN_TTL = int(os.environ.get("GATEWAY_TOKEN_TTL", "300"))
GATEWAY_FORWARD_CHANNEL = os.environ.get("GATEWAY_FORWARD_CHANNEL", "gateway.events")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # runworker says "Running worker for channels [...]" at INFO.
    "loggers": {
        "django.channels.worker": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "gateway": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
