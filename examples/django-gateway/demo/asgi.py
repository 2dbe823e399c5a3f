"""The ASGI application. `python manage.py runworker gateway.events` serves
its `channel` part: the events channels-server forwards (`--forward-channel
gateway.events`) go to GatewayWorker. (The `http` part is ordinary Django,
for an ASGI server if you use one instead of runserver.)
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")
django_asgi = get_asgi_application()

from channels.routing import ChannelNameRouter, ProtocolTypeRouter  # noqa: E402 (needs settings)
from django.conf import settings  # noqa: E402

from gateway.consumers import GatewayWorker  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi,
        "channel": ChannelNameRouter({settings.GATEWAY_FORWARD_CHANNEL: GatewayWorker.as_asgi()}),
    }
)
