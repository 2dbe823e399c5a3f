from django.urls import re_path

from . import consumers

websocket_urlpatterns = [
    re_path(r"ws/boom/$", consumers.Boom.as_asgi()),
    re_path(r"ws/slow/$", consumers.SlowAccept.as_asgi()),
    re_path(r"ws/whoami/$", consumers.WhoAmI.as_asgi()),
    re_path(r"ws/refuse/$", consumers.Refuse.as_asgi()),
    re_path(r"ws/protocol/$", consumers.Protocol.as_asgi()),
    re_path(r"ws/slowjoin/(?P<room_name>\w+)/$", consumers.SlowJoin.as_asgi()),
]
