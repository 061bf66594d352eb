"""Payloads as JSON. The proxy takes a payload as ``value`` (text) or ``value_b64`` (base64
bytes) and delivers ``value`` when it is UTF-8, else ``value_b64``. This client sends ``str``
as ``value`` and ``bytes`` as ``value_b64``, and hands back every delivered message with
``value`` as ``str`` or ``bytes`` (``value_b64`` decoded and removed)."""

import base64
import json


def put_value(body, value):
    """Sets ``value`` (str) or ``value_b64`` (bytes-like) in a JSON body; returns it."""
    if isinstance(value, str):
        body["value"] = value
    elif isinstance(value, (bytes, bytearray, memoryview)):
        body["value_b64"] = base64.b64encode(bytes(value)).decode("ascii")
    else:
        raise TypeError(f"a value is str or bytes, not {type(value).__name__}")
    return body


def decoded(message):
    """A delivered message with ``value_b64`` turned into ``value`` (bytes), in place."""
    if isinstance(message, dict) and "value_b64" in message:
        message["value"] = base64.b64decode(message.pop("value_b64"))
    return message


def parse_push(raw):
    """The JSON a webhook receives (bytes or str) as a dict, its message's value decoded:
    ``{"subscription": id, "message": {...}}``."""
    push = json.loads(raw)
    decoded(push.get("message"))
    return push


def reply_body(value, traceparent=None, tracestate=None):
    """The body a webhook answers a request with to reply ``value`` (str or bytes), as bytes
    ready to send with ``content-type: application/json``; the reply carries
    ``traceparent``/``tracestate`` when given, else the request's context."""
    body = put_value({}, value)
    if traceparent is not None:
        body["trace"] = {"traceparent": traceparent}
        if tracestate is not None:
            body["trace"]["tracestate"] = tracestate
    return json.dumps(body).encode()
