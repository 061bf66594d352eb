"""Python client of the DeFiBus proxy.

Two transports, one package (standard library plus ``websocket-client``):

- :class:`HttpClient` -- publish, request-reply and webhook subscriptions over HTTP/1.1 JSON;
- :class:`StreamClient` -- a WebSocket session: publish, request, subscribe with a callback
  (acked when the callback returns), and respond to requests; it reconnects by itself and
  re-subscribes, and the proxy redelivers every message that was not acked.
"""

from .errors import ProxyError, ProxyTimeout
from .identity import Identity
from .http import HttpClient
from .stream import Delivery, StreamClient, Subscription

__all__ = [
    "Delivery",
    "HttpClient",
    "Identity",
    "ProxyError",
    "ProxyTimeout",
    "StreamClient",
    "Subscription",
]
