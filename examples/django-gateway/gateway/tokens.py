"""Tokens for channels-server, made with Django's own signing (no extra
dependency): `signing.dumps(claims, salt=...)` with the project's SECRET_KEY,
which channels-server verifies with `--django-secret-key` and `--django-salt`.
The claims are those of docs/protocol.md.
"""

import time

from django.conf import settings
from django.core import signing

#: Joined by the server at connect (so also on the pub/sub layer, where only
#: the process that owns a connection's channel may add it to a group).
NEWS = "demo.news"
#: The worker's room: pages subscribe to it themselves (`allow`).
ROOM = "demo.room"
#: Pages may publish here straight from the browser (`publish`).
CHAT = "demo.chat"


def claims_for(user: str, ttl: int | None = None) -> dict:
    """What `user` may do on the gateway, for `ttl` seconds."""
    ttl = settings.GATEWAY_TOKEN_TTL if ttl is None else ttl
    return {
        "sub": user,
        "exp": int(time.time()) + ttl,
        "groups": [NEWS],
        "allow": ["demo.*"],
        "publish": [CHAT],
    }


def issue_token(user: str, ttl: int | None = None) -> str:
    """A signed token for `user` (every connection of it also joins `user.<user>`)."""
    return signing.dumps(claims_for(user, ttl), salt=settings.GATEWAY_TOKEN_SALT)
