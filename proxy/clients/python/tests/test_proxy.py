"""The Python client against a real proxy and broker."""

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer as HookServer
import json
import socket
import subprocess
import sys
import threading

import pytest
import websocket

from conftest import DEFIBUS, WAIT, defibus, identity, wait_until
from defibus_proxy import HttpClient, Identity, ProxyError, ProxyTimeout


def start_responder(bus, topic, group):
    """`defibus respond --echo`: a Rust responder."""
    return subprocess.Popen(
        [DEFIBUS, "respond", "--nameserver", bus.nameserver, "--topic", topic, "--group", group,
         "--echo"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def retry_request(call, attempts=20):
    """Requests until a responder has been assigned the queues."""
    for _ in range(attempts):
        try:
            return call()
        except ProxyTimeout:
            continue
    raise AssertionError("no reply")


def test_python_requester_calls_a_rust_responder(bus, http, stream_factory):
    bus.create_topic("A10-8001")
    responder = start_responder(bus, "A10-8001", "echo-svc")
    try:
        reply = retry_request(lambda: http.request("A10-8001", "over http", timeout_ms=2000))
        assert reply["value"] == "over http"
        stream = stream_factory("requester-1")
        reply = retry_request(lambda: stream.request("A10-8001", "over ws", timeout_ms=2000))
        assert reply["value"] == "over ws"
    finally:
        responder.terminate()
        responder.wait()


def test_rust_requester_calls_a_python_responder(bus, stream_factory):
    bus.create_topic("A10-8002")
    responder = stream_factory("responder-1")
    responder.respond("A10-8002", "upper-svc", lambda m: m["value"].upper())
    for _ in range(20):
        result = defibus("request", "--nameserver", bus.nameserver, "--topic", "A10-8002",
                         "--timeout-ms", "2000", "from rust", check=False)
        if result.returncode == 0:
            break
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "FROM RUST"


def test_broadcast_reaches_two_python_subscribers(bus, http, stream_factory):
    bus.create_topic("A10-8003")
    seen = {"a": [], "b": []}
    for name in seen:
        client = stream_factory(f"broadcast-{name}")
        client.subscribe("A10-8003", "fanout", lambda d, name=name: seen[name].append(d.value),
                         mode="broadcast", start="earliest")
    values = [f"b{i}" for i in range(5)]
    http.publish_batch([{"topic": "A10-8003", "value": v} for v in values])
    wait_until("both subscribers got every message",
               lambda: all(sorted(v) == values for v in seen.values()))


class _Hook(BaseHTTPRequestHandler):
    received = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).received.append(json.loads(body))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_subscriber_receives_pushes(bus, http):
    bus.create_topic("A10-8004")
    server = HookServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        sub = http.subscribe_webhook("A10-8004", "hooks", url, start="earliest")
        http.publish("A10-8004", "to the hook")
        wait_until("a webhook push", lambda: _Hook.received)
        push = _Hook.received[0]
        assert push["subscription"] == sub["id"]
        assert push["message"]["value"] == "to the hook"
        assert http.heartbeat()["subscriptions"] == 1
        http.unsubscribe_webhook(sub["id"])
        with pytest.raises(ProxyError) as gone:
            http.subscription(sub["id"])
        assert gone.value.status == 404
    finally:
        server.shutdown()


def test_proxy_restart_loses_nothing_and_redelivers_unacked(bus, proxy, http, stream_factory):
    bus.create_topic("A10-8005")
    got = []
    client = stream_factory("restart-1", backoff_max=0.5)
    client.subscribe("A10-8005", "durable", lambda d: got.append(d.value), start="earliest")
    # A second subscriber that never acks its first message.
    held = []
    holder = stream_factory("restart-2", backoff_max=0.5)

    def hold(delivery):
        held.append(delivery.value)
        if len(held) > 1:
            delivery.ack()

    holder.subscribe("A10-8005", "holder", hold, start="earliest", auto_ack=False)

    first = [f"m{i}" for i in range(10)]
    http.publish_batch([{"topic": "A10-8005", "value": v} for v in first])
    wait_until("the first messages", lambda: set(first) <= set(got) and held)
    wait_until("the acked messages committed", lambda: bus.committed("A10-8005", "durable") == 10)

    proxy.kill()
    # Published while the proxy is down, straight to the broker.
    second = [f"n{i}" for i in range(10)]
    for value in second:
        defibus("produce", "--nameserver", bus.nameserver, "--topic", "A10-8005", value)
    proxy.restart()

    wait_until("every message after the restart", lambda: set(first + second) <= set(got))
    assert client.reconnects >= 1
    # The unacked first message of the holder came again after the reconnect.
    wait_until("the unacked message again", lambda: held.count(held[0]) >= 2)
    # Published through the restarted proxy too.
    http2 = HttpClient(proxy.url)
    http2.publish("A10-8005", "after")
    wait_until("a message after the restart", lambda: "after" in got)


def test_bad_inputs_get_the_documented_errors(bus, proxy, http):
    bus.create_topic("A10-8006")
    status, body = http.post_raw("/v1/publish", b"{not json")
    assert status == 400 and body["error"]["code"] == "bad_request"
    with pytest.raises(ProxyError) as unknown:
        http.publish("A10-9999", "x")
    assert unknown.value.status == 404 and unknown.value.code == "unknown_topic"
    status, body = http.post_raw(
        "/v1/publish", json.dumps({"topic": "A10-8006", "value": "x" * (2 << 20)}).encode())
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    with pytest.raises(ProxyTimeout) as timeout:
        http.request("A10-8006", "nobody answers", timeout_ms=300)
    assert timeout.value.status == 504

    ws = websocket.create_connection(proxy.url.replace("http", "ws") + "/v1/stream", timeout=WAIT)
    ws.send(json.dumps({"type": "publish", "topic": "A10-8006", "value": "x"}))
    error = json.loads(ws.recv())
    assert error["type"] == "error" and "hello" in error["message"]
    ws.close()

    ws = websocket.create_connection(proxy.url.replace("http", "ws") + "/v1/stream", timeout=WAIT)
    ws.send(json.dumps({"type": "hello", "identity": identity("bad-ws").to_json()}))
    assert json.loads(ws.recv())["type"] == "welcome"
    ws.send("{broken")
    error = json.loads(ws.recv())
    assert error["type"] == "error" and error["code"] == "bad_request"
    ws.send(json.dumps({"type": "publish", "ref": 7, "topic": "A10-9999", "value": "x"}))
    error = json.loads(ws.recv())
    assert error == {"type": "error", "ref": 7, "code": "unknown_topic", "message": error["message"]}
    ws.close()


def test_examples_run(bus, proxy):
    """The examples, as a user runs them."""
    import os
    import sys
    from pathlib import Path

    examples = Path(__file__).resolve().parents[1] / "examples"
    env = dict(os.environ, DEFIBUS_PROXY=proxy.url)
    bus.create_topic("A10-8007")

    def run(script, *args):
        return subprocess.run([sys.executable, str(examples / script), *args], env=env,
                              capture_output=True, text=True, timeout=WAIT)

    published = run("publish.py", "A10-8007", "from the example")
    assert published.returncode == 0 and published.stdout.startswith("queue="), published.stderr
    responder = subprocess.Popen([sys.executable, "-u", str(examples / "respond.py"), "A10-8007",
                                  "example-svc"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert "responding" in responder.stdout.readline()
        for _ in range(20):
            replied = run("request.py", "A10-8007", "shout")
            if replied.returncode == 0:
                break
        assert replied.stdout.strip() == "SHOUT", replied.stderr
    finally:
        responder.terminate()
        responder.wait()

    bus.create_topic("A10-8008")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    webhook = subprocess.Popen([sys.executable, "-u", str(examples / "webhook_respond.py"),
                                "A10-8008", "hook-svc", str(port)], env=env,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert "answering" in webhook.stdout.readline()
        for _ in range(20):
            replied = run("request.py", "A10-8008", "drawkcab")
            if replied.returncode == 0:
                break
        assert replied.stdout.strip() == "backward", replied.stderr
    finally:
        webhook.terminate()
        assert webhook.wait(timeout=WAIT) == 0
    # Stopping the example removed its durable subscription.
    example = Identity(system="example", area="A10", group="hook-svc", instance="webhook-1")
    assert HttpClient(proxy.url, identity=example).heartbeat()["subscriptions"] == 0
