"""Python client of the DeFiBus proxy.

Two transports, one package (standard library plus ``websocket-client``):

- :class:`HttpClient` -- publish, request-reply, replies by address and durable webhook
  subscriptions over HTTP/1.1 JSON (:func:`parse_push` and :func:`reply_body` for the webhook
  side);
- :class:`StreamClient` -- a WebSocket session: publish, request, subscribe with a callback
  (acked when the callback returns), and respond to requests; it reconnects by itself and
  re-subscribes, and the proxy redelivers every message that was not acked.

Values are ``str`` or ``bytes`` both ways: text travels as ``value``, bytes as ``value_b64``.

Tracing: every publish, request and reply takes ``traceparent=``/``tracestate=`` (W3C trace
context, :mod:`defibus_proxy.trace`); delivered messages carry theirs as ``message["trace"]``;
:meth:`HttpClient.trace` tells one message's life (stored, pushed, committed, replied).

Security: ``token=`` is sent as ``Authorization: Bearer``. A proxy with ``[tls]`` is reached
at ``https://`` (the stream at ``wss://``) with ``ca_file=`` (the bus's CA) or
``ssl_context=``, and ``cert_file=``/``key_file=`` for mutual TLS; certificate failures raise
:class:`TlsError`.
"""

from .errors import ProxyError, ProxyTimeout, RateLimited, TlsError
from .identity import Identity
from .http import HttpClient
from .stream import Delivery, StreamClient, Subscription
from .trace import child_of, new_traceparent, trace_of
from .values import parse_push, reply_body

__all__ = [
    "Delivery",
    "HttpClient",
    "Identity",
    "ProxyError",
    "ProxyTimeout",
    "RateLimited",
    "StreamClient",
    "Subscription",
    "TlsError",
    "child_of",
    "new_traceparent",
    "parse_push",
    "reply_body",
    "trace_of",
]
