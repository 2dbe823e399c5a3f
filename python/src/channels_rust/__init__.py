"""Run existing Django Channels consumers behind the channels-server gateway.

``python -m channels_rust.worker APP --channel NAME`` serves the ASGI
application ``APP`` (``module:attribute``) for every WebSocket connection the
gateway (started with ``--forward-channel NAME``) passes through. See
README.md and docs/protocol.md ("ASGI workers").
"""

__all__: list[str] = []
__version__ = "0.1.0"
