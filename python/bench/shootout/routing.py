from django.urls import path

from .consumers import Shootout

websocket_urlpatterns = [path("shootout/", Shootout.as_asgi())]
