"""W3C trace context through the Python client both ways (HTTP headers, WebSocket `trace`
objects, webhooks) and HttpClient.trace, against a real proxy and broker."""

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import queue
import threading

import pytest

from conftest import WAIT, wait_until
from defibus_proxy import (ProxyError, ProxyTimeout, child_of, new_traceparent,
                           parse_push, reply_body, trace_of)

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def retry(call, attempts=20):
    """Calls until a responder has been assigned the queues."""
    for _ in range(attempts):
        try:
            return call()
        except ProxyTimeout:
            continue
    raise AssertionError("no reply")


def test_new_traceparents_follow_the_w3c_format():
    made = new_traceparent()
    version, trace_id, span, flags = made.split("-")
    assert (version, len(trace_id), len(span), flags) == ("00", 32, 16, "01")
    assert int(trace_id, 16) and int(span, 16)
    child = child_of(made)
    assert child.split("-")[1] == trace_id and child != made
    assert new_traceparent(sampled=False).endswith("-00")


def test_a_published_context_reaches_http_and_websocket_consumers(bus, http, stream_factory):
    bus.create_topic("A10-8501")
    seen = queue.Queue()
    subscriber = stream_factory("trace-sub")
    subscriber.subscribe("A10-8501", "readers", lambda d: seen.put(d.message), start="earliest")
    http.publish("A10-8501", "over http", traceparent=PARENT, tracestate="rojo=1")
    subscriber.publish("A10-8501", "over ws", traceparent=PARENT)
    http.publish("A10-8501", "untraced")
    got = {}
    while len(got) < 3:
        message = seen.get(timeout=WAIT)
        got[message["value"]] = trace_of(message)
    assert got == {
        "over http": (PARENT, "rojo=1"),
        "over ws": (PARENT, None),
        "untraced": (None, None),
    }


def test_an_invalid_traceparent_is_refused_naming_the_rule(bus, http):
    bus.create_topic("A10-8502")
    with pytest.raises(ProxyError) as refused:
        http.publish("A10-8502", "x",
                     traceparent="00-00000000000000000000000000000000-00f067aa0ba902b7-01")
    assert refused.value.status == 400
    assert "all zeros" in str(refused.value)


def test_a_python_responder_answers_in_the_requests_trace(bus, http, stream_factory):
    bus.create_topic("A10-8503")
    responder = stream_factory("trace-responder")
    received = queue.Queue()

    def handle(message):
        received.put(trace_of(message))
        parent, _ = trace_of(message)
        if message["value"] == "own span":
            return message["value"].upper(), child_of(parent)
        return message["value"].upper()

    responder.respond("A10-8503", "svc", handle)
    reply = retry(lambda: http.request("A10-8503", "pass on", timeout_ms=2000,
                                       traceparent=PARENT, tracestate="rojo=1"))
    assert reply["value"] == "PASS ON"
    assert trace_of(reply) == (PARENT, "rojo=1"), "without its own span the reply carries the request's"
    reply = retry(lambda: http.request("A10-8503", "own span", timeout_ms=2000, traceparent=PARENT))
    own, _ = trace_of(reply)
    assert own.split("-")[1] == PARENT.split("-")[1] and own != PARENT
    assert received.get(timeout=WAIT)[0] == PARENT


def test_a_webhook_gets_the_context_and_replies_in_it(bus, http):
    bus.create_topic("A10-8504")
    pushes = queue.Queue()
    own_span = child_of(PARENT)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            push = parse_push(self.rfile.read(int(self.headers["content-length"])))
            pushes.put((self.headers.get("traceparent"), push))
            body = reply_body("answered", traceparent=own_span) if "reply_to" in push["message"] else b""
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        http.subscribe_webhook("A10-8504", "hooks", url, start="earliest")
        http.publish("A10-8504", "event", traceparent=PARENT)
        header, push = pushes.get(timeout=WAIT)
        assert header == PARENT
        assert trace_of(push["message"]) == (PARENT, None)
        reply = http.request("A10-8504", "question", timeout_ms=10000, traceparent=PARENT)
        assert reply["value"] == "answered"
        assert trace_of(reply)[0] == own_span
    finally:
        server.shutdown()


def test_trace_tells_a_messages_life(bus, http, stream_factory):
    bus.create_topic("A10-8505", queues=1)
    stored = http.publish("A10-8505", "traced", key="order-5", traceparent=PARENT)
    subscriber = stream_factory("trace-reader")
    subscriber.subscribe("A10-8505", "readers", lambda d: None, start="earliest")

    def committed():
        answer = http.trace("A10-8505", offset=stored["offset"], queue=stored["queue_id"])
        groups = answer["queues"][0]["messages"][0]["groups"]
        return [g for g in groups if g["committed"]["state"] == "committed"]

    wait_until("the group committed past the message", committed)
    answer = http.trace("A10-8505", key="order-5")
    life = answer["queues"][0]["messages"][0]
    assert (life["offset"], life["type"], life["key"]) == (stored["offset"], "event", "order-5")
    assert life["trace"] == {"traceparent": PARENT}
    group = life["groups"][0]
    assert group["group"] == "readers"
    assert group["pushes"] and group["committed"]["at_ms"] >= life["stored_ms"]
    assert http.trace("A10-8505", offset=99, queue=0)["queues"][0]["messages"] == []
    with pytest.raises(ProxyError) as refused:
        http.trace("A10-8505", matches=99)
    assert refused.value.status == 400
