"""Message kinds through the proxy from Python (ARCHITECTURE §13.3-§13.5): time-to-live,
delayed messages and their cancel, transactional halves committed and rolled back, with the
documented errors (`held_settled` 409, `not_held` 404, `bad_request` 400)."""

import queue
import time

import pytest

from conftest import WAIT
from defibus_proxy import ProxyError


def read(bus, stream_factory, topic, count):
    """The first `count` values a fresh group reads from `topic`, in order of arrival."""
    seen = queue.Queue()
    reader = stream_factory(f"kinds-{topic}")
    reader.subscribe(topic, f"read-{topic}", lambda d: seen.put(d.message["value"]),
                     start="earliest")
    return [seen.get(timeout=WAIT) for _ in range(count)]


def test_a_delayed_message_comes_at_its_time_and_another_is_cancelled(bus, http, stream_factory):
    bus.create_topic("A10-8601")
    sent = time.time()
    later = http.publish("A10-8601", "later", key="k", delay_ms=300)
    assert later["held_id"].startswith("A10-8601/")
    far = http.publish("A10-8601", "never", key="k",
                       deliver_at_ms=int(time.time() * 1000) + 600_000)
    assert http.cancel_delayed(far["held_id"]) == {"id": far["held_id"], "outcome": "cancelled"}
    with pytest.raises(ProxyError) as settled:
        http.cancel_delayed(far["held_id"])
    assert settled.value.status == 409 and settled.value.code == "held_settled"
    http.publish("A10-8601", "now", key="k")
    assert sorted(read(bus, stream_factory, "A10-8601", 2)) == ["later", "now"]
    assert time.time() >= sent + 0.3


def test_a_websocket_publish_takes_a_delay(bus, http, stream_factory):
    bus.create_topic("A10-8602")
    stream = stream_factory("kinds-ws")
    stored = stream.publish("A10-8602", "w", delay_ms=60_000)
    assert http.cancel_delayed(stored["held_id"])["outcome"] == "cancelled"


def test_an_expired_message_is_never_delivered(bus, http, stream_factory):
    bus.create_topic("A10-8603")
    http.publish("A10-8603", "stale", key="k", ttl_ms=1)
    # The deadline is a wall-clock time: let it certainly pass.
    deadline = time.monotonic() + 0.02
    while time.monotonic() < deadline:
        pass
    http.publish("A10-8603", "fresh", key="k", ttl_ms=600_000)
    assert read(bus, stream_factory, "A10-8603", 1) == ["fresh"]


def test_bad_kind_fields_and_ids_are_refused(bus, http):
    bus.create_topic("A10-8604")
    for kwargs in ({"ttl_ms": 0}, {"delay_ms": 5, "deliver_at_ms": 5}, {"delay_ms": 10**17}):
        with pytest.raises(ProxyError) as refused:
            http.publish("A10-8604", "x", **kwargs)
        assert refused.value.status == 400, kwargs
    with pytest.raises(ProxyError) as refused:
        http.cancel_delayed("not an id")
    assert refused.value.status == 400
    plain = http.publish("A10-8604", "plain")
    assert "held_id" not in plain
    with pytest.raises(ProxyError) as missing:
        http.cancel_delayed(f"A10-8604/{plain['queue_id']}/999999@{plain['broker_id']}")
    assert missing.value.status == 404 and missing.value.code == "not_held"


def test_transactions_commit_and_roll_back(bus, http, stream_factory):
    bus.create_topic("A10-8605")
    paid = http.begin_transaction("py-tx", "A10-8605", "paid", key="o-1")
    assert paid["producer_group"] == "py-tx"
    void = http.begin_transaction("py-tx", "A10-8605", "void", key="o-1")
    assert http.rollback_transaction(void["id"]) == {"id": void["id"], "outcome": "rolled_back"}
    assert http.commit_transaction(paid["id"]) == {"id": paid["id"], "outcome": "committed"}
    assert http.commit_transaction(paid["id"])["outcome"] == "committed"
    for call, half in ((http.commit_transaction, void), (http.rollback_transaction, paid)):
        with pytest.raises(ProxyError) as settled:
            call(half["id"])
        assert settled.value.status == 409 and settled.value.code == "held_settled"
    http.publish("A10-8605", "end", key="o-1")
    assert read(bus, stream_factory, "A10-8605", 2) == ["paid", "end"]
    with pytest.raises(ProxyError) as refused:
        http.begin_transaction("not a group", "A10-8605", "x")
    assert refused.value.status == 400


def test_a_nacked_message_is_redelivered(bus, http, stream_factory):
    bus.create_topic("A10-8606")
    seen = queue.Queue()

    def handle(delivery):
        first = seen.empty()
        seen.put(delivery.message)
        if first:
            assert delivery.nack("cannot handle it yet")

    reader = stream_factory("kinds-nack")
    reader.subscribe("A10-8606", "py-nackers", handle, start="earliest")
    http.publish("A10-8606", "retry me")
    first = seen.get(timeout=WAIT)
    # The default backoff's first level is 1 s; the redelivery comes from the retry topic.
    again = seen.get(timeout=WAIT)
    assert first["value"] == again["value"] == "retry me"
    assert again["topic"] != first["topic"] or again["offset"] != first["offset"]
