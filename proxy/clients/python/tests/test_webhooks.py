"""Webhook subscriptions that outlive a killed proxy, and webhook responders answering Rust
and Python requesters in the webhook's answer or later with HttpClient.reply."""

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import queue
import threading

import pytest

from conftest import WAIT, defibus, wait_until
from defibus_proxy import HttpClient, ProxyError, parse_push, reply_body


class Hook:
    """A webhook receiver: `answer(push)` returns (status, body bytes); every push it got is
    put on `pushes`."""

    def __init__(self, answer=lambda push: (200, b"")):
        self.pushes = queue.Queue()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                push = parse_push(self.rfile.read(int(self.headers["content-length"])))
                status, body = answer(push)
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                hook.pushes.put(push)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def next(self):
        return self.pushes.get(timeout=WAIT)

    def close(self):
        self.server.shutdown()


@pytest.fixture()
def hook_factory():
    hooks = []

    def make(*args):
        hooks.append(Hook(*args))
        return hooks[-1]

    yield make
    for hook in hooks:
        hook.close()


def test_a_webhook_subscription_survives_a_killed_proxy(bus, proxy, http, hook_factory):
    bus.create_topic("A10-8101")
    hook = hook_factory()
    sub = http.subscribe_webhook("A10-8101", "durable-hooks", hook.url, start="earliest")
    http.publish("A10-8101", "before the kill")
    assert hook.next()["message"]["value"] == "before the kill"

    proxy.kill()
    defibus("produce", "--nameserver", bus.nameserver, "--topic", "A10-8101", "while down")
    proxy.restart()

    restarted = HttpClient(proxy.url, identity=http.identity)
    assert restarted.subscription(sub["id"])["topic"] == "A10-8101"
    restarted.publish("A10-8101", b"after the restart \xff")
    seen = set()
    # At least once: a message the hook acknowledged just before the kill may come again.
    wait_until("both messages after the restart",
               lambda: seen.update([hook.next()["message"]["value"]]) or
               {"while down", b"after the restart \xff"} <= seen)
    restarted.unsubscribe_webhook(sub["id"])


def test_webhook_responders_answer_inline_or_by_reply(bus, proxy, http, hook_factory):
    bus.create_topic("A10-8102")

    def answer(push):
        value = push["message"]["value"]
        if value == "later":
            return 202, b""
        return 200, reply_body(value.upper() if isinstance(value, str) else value[::-1])

    hook = hook_factory(answer)
    http.subscribe_webhook("A10-8102", "hook-svc", hook.url)

    # A Rust requester, answered in the webhook's response body.
    for _ in range(20):
        result = defibus("request", "--nameserver", bus.nameserver, "--topic", "A10-8102",
                         "--timeout-ms", "2000", "from rust", check=False)
        if result.returncode == 0:
            break
    assert result.stdout.strip() == "FROM RUST", result.stderr

    # A Python requester with bytes, answered inline too.
    assert http.request("A10-8102", b"\x01\x02\xff", timeout_ms=5000)["value"] == b"\xff\x02\x01"

    # Answered later, by HttpClient.reply.
    answers = queue.Queue()
    threading.Thread(
        target=lambda: answers.put(http.request("A10-8102", "later", timeout_ms=10000)),
        daemon=True,
    ).start()
    request = None
    while request is None or request["message"]["value"] != "later":
        request = hook.next()
    http.reply(request["message"], "answered by POST")
    assert answers.get(timeout=WAIT)["value"] == "answered by POST"
    with pytest.raises(ProxyError) as gone:
        http.reply(dict(request["message"], reply_to="nobody@1#A10"), "too late")
    assert gone.value.status == 404 and gone.value.code == "no_requester"
