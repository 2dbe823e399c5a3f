"""Settings of the tutorial-style project the adapter tests run behind the
gateway. The channel layer comes from the environment: CHAT_REDIS_URL and
CHAT_LAYER (`core` or `pubsub`)."""

import os

SECRET_KEY = "tutorial-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "channels",
    "chat",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
ROOT_URLCONF = "mysite.urls"
ASGI_APPLICATION = "mysite.asgi.application"
USE_TZ = True

_BACKENDS = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": _BACKENDS[os.environ.get("CHAT_LAYER", "core")],
        "CONFIG": {"hosts": [os.environ.get("CHAT_REDIS_URL", "redis://127.0.0.1:6379/0")]},
    }
}
