"""Tokens: the client presents `Authorization: Bearer` on every HTTP call and on the
WebSocket handshake, and turns a secured proxy's refusals into ProxyError. These tests stand
in for the proxy with a local server that records what it is sent, so they need no bus."""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from conftest import identity
from defibus_proxy import HttpClient, ProxyError, StreamClient

TOKEN = "dfb.0000abcd." + "ab" * 32


class _Recorder(BaseHTTPRequestHandler):
    """Answers every call like a secured proxy: 401 without the expected bearer token."""

    seen = []

    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        authorization = self.headers.get("authorization")
        self.seen.append((self.command, self.path, authorization))
        if authorization == f"Bearer {TOKEN}":
            status, body = 200, {"topic": "A10-1", "broker_id": "b", "queue_id": 0, "offset": 0}
        else:
            status = 401
            body = {"error": {"code": "unauthenticated", "message": "no token"}}
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        if status == 401:
            self.send_header("www-authenticate", "Bearer")
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *args):
        pass


@pytest.fixture()
def recorder():
    _Recorder.seen = []
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder.seen
    server.shutdown()
    server.server_close()


def test_every_http_call_carries_the_bearer_token(recorder):
    url, seen = recorder
    client = HttpClient(url, identity=identity("tokens"), token=TOKEN)
    client.publish("A10-1", "v")
    client.heartbeat()
    client.subscription("sub-1")
    client.post_raw("/v1/publish", b"{}")
    assert [s[2] for s in seen] == [f"Bearer {TOKEN}"] * 4, seen


def test_a_call_without_a_token_raises_the_proxys_401(recorder):
    url, seen = recorder
    with pytest.raises(ProxyError) as refused:
        HttpClient(url).publish("A10-1", "v")
    assert refused.value.status == 401
    assert refused.value.code == "unauthenticated"
    assert seen[0][2] is None


def _refusing_ws_server():
    """A server that records one WebSocket handshake and refuses it with a 401 JSON error."""
    listener = socket.create_server(("127.0.0.1", 0))
    handshake = {}

    def serve():
        conn, _ = listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            handshake["request"] = data.decode("latin-1")
            body = json.dumps({"error": {"code": "unauthenticated", "message": "expired"}})
            conn.sendall(
                (
                    "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n"
                    f"www-authenticate: Bearer\r\ncontent-length: {len(body)}\r\n"
                    f"connection: close\r\n\r\n{body}"
                ).encode()
            )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread, handshake


def test_the_stream_handshake_carries_the_token_and_a_refusal_raises_proxy_error():
    listener, thread, handshake = _refusing_ws_server()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    client = StreamClient(url, identity("tokens-ws"), reconnect=False, token=TOKEN, timeout=5)
    with pytest.raises(ProxyError) as refused:
        client.connect()
    thread.join(timeout=5)
    listener.close()
    assert refused.value.status == 401
    assert refused.value.code == "unauthenticated"
    lines = [line.lower() for line in handshake["request"].split("\r\n")]
    assert f"authorization: bearer {TOKEN}".lower() in lines, handshake["request"]
