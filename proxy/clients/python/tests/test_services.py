"""Calls by service id through the proxy: a service deployed through the standalone bus's SGS
is reached by its id from HTTP and from the stream; an undeployed one is `unknown_service`."""

import pytest

from conftest import identity, wait_until
from defibus_proxy import HttpClient, ProxyError, ProxyTimeout, StreamClient


def test_publish_and_request_by_service_id(bus, proxy_factory):
    bus.deploy_service("20198301", "pytest-echo")
    proxy = proxy_factory("--gsl", bus.gsl)
    http = HttpClient(proxy.url, identity=identity("by-id"))

    stored = http.publish_service("20198301", "by id")
    assert stored["topic"] == "A10-20198301"

    responder = StreamClient(proxy.url, identity("by-id-responder")).connect()
    requester = StreamClient(proxy.url, identity("by-id-requester")).connect()
    try:
        responder.respond("A10-20198301", "echo", lambda m: m["value"].upper())
        replies = []

        def answered():
            try:
                replies.append(http.request_service("20198301", "ping", timeout_ms=1000))
                return True
            except ProxyTimeout:  # the responder may not be assigned the queues yet
                return False

        wait_until("a reply by service id", answered)
        assert replies[0]["value"] == "PING"
        assert requester.publish_service("20198301", "streamed")["topic"] == "A10-20198301"
    finally:
        responder.close()
        requester.close()

    with pytest.raises(ProxyError) as refused:
        http.publish_service("20198399", "nobody")
    assert refused.value.code == "unknown_service"
