"""Binary values through the Python client, and the rate limit seen from it."""

import pytest

from conftest import identity, wait_until
from defibus_proxy import HttpClient, ProxyTimeout, RateLimited, StreamClient


def test_bytes_go_in_and_come_out_as_bytes(bus, http, stream_factory):
    bus.create_topic("A10-8201")
    bus.create_topic("A10-8202")
    got = []
    subscriber = stream_factory("bytes-sub")
    subscriber.subscribe("A10-8201", "bytes", lambda d: got.append(d.value), start="earliest")
    http.publish("A10-8201", b"\x00\xffbinary")
    subscriber.publish("A10-8201", "text stays text")
    http.publish_batch([{"topic": "A10-8201", "value": b"\x80"}])
    wait_until("three messages", lambda: len(got) == 3)
    assert sorted(got, key=repr) == sorted([b"\x00\xffbinary", "text stays text", b"\x80"], key=repr)

    responder = stream_factory("bytes-responder")
    responder.respond("A10-8202", "reverse", lambda m: m["value"][::-1])
    requester = stream_factory("bytes-requester")
    for _ in range(20):
        try:
            reply = requester.request("A10-8202", b"\x01\x02\xfe", timeout_ms=2000)
            break
        except ProxyTimeout:  # the responder may not be assigned the queue yet
            continue
    assert reply["value"] == b"\xfe\x02\x01"


def test_the_rate_limit_raises_rate_limited(bus, proxy_factory):
    bus.create_topic("A10-8203")
    limited = proxy_factory("--rate-limit-messages-per-s", "1", "--rate-limit-burst-messages", "2")
    http = HttpClient(limited.url, identity=identity("limited-http"))
    http.publish("A10-8203", "one")
    http.publish("A10-8203", "two")
    with pytest.raises(RateLimited) as refused:
        http.publish("A10-8203", "three")
    assert refused.value.status == 429
    assert 0 < refused.value.retry_after <= 1
    assert "1 messages/s" in refused.value.message
    with StreamClient(limited.url, identity("limited-ws")) as stream:
        stream.publish("A10-8203", "one")
        stream.publish("A10-8203", "two")
        with pytest.raises(RateLimited):
            stream.publish("A10-8203", "three")
