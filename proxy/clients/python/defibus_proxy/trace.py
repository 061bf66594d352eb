"""W3C trace context on messages: what the proxy expects and how a Python caller makes one.

A message carries a context as the ``traceparent`` and ``tracestate`` HTTP headers (this
client's ``traceparent=``/``tracestate=`` arguments) or, on the WebSocket and inside batches,
as a ``trace`` object ``{"traceparent": ..., "tracestate": ...}``. Every delivered message
carries the context its sender gave as ``message["trace"]`` (absent when none). The proxy
refuses a ``traceparent`` that breaks the W3C rules with 400 and drops a ``tracestate`` that
does (as W3C asks of a receiver)."""

import secrets


def new_traceparent(sampled=True):
    """A new W3C ``traceparent`` (version 00): random trace and span ids, sampled by
    default."""
    trace_id = "0" * 32
    while trace_id == "0" * 32:
        trace_id = secrets.token_hex(16)
    return f"00-{trace_id}-{new_span_id()}-{'01' if sampled else '00'}"


def new_span_id():
    """A random, non-zero 16-hex-digit span id."""
    span = "0" * 16
    while span == "0" * 16:
        span = secrets.token_hex(8)
    return span


def child_of(traceparent):
    """``traceparent`` with a new span id as its parent id: what a participant that records
    a span of its own passes on (same trace id and flags)."""
    version, trace_id, _, flags = traceparent.split("-")[:4]
    return f"00-{trace_id}-{new_span_id()}-{flags}"


def trace_of(message):
    """The ``(traceparent, tracestate)`` a delivered message carries, ``(None, None)`` when
    none."""
    trace = (message or {}).get("trace") or {}
    return trace.get("traceparent"), trace.get("tracestate")


def trace_object(traceparent, tracestate=None):
    """The ``trace`` object of a message, or ``None`` without a ``traceparent``."""
    if traceparent is None:
        if tracestate is not None:
            raise ValueError("a tracestate needs a traceparent")
        return None
    trace = {"traceparent": traceparent}
    if tracestate is not None:
        trace["tracestate"] = tracestate
    return trace


def trace_headers(traceparent, tracestate=None):
    """The ``traceparent``/``tracestate`` headers of a context (empty without one)."""
    trace = trace_object(traceparent, tracestate)
    return {} if trace is None else dict(trace)
