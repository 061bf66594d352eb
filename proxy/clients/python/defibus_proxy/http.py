"""HTTP/1.1 JSON calls to the proxy, with the standard library only. Values are ``str`` or
``bytes`` both ways (see :mod:`defibus_proxy.values`)."""

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request

from .errors import error_from
from .tls import context_for, tls_error
from .trace import trace_headers, trace_of
from .values import decoded, put_value


class HttpClient:
    """Calls the proxy's HTTP API at ``base_url`` (e.g. ``http://127.0.0.1:8080``, or
    ``https://...`` for a proxy with ``[tls]``).

    ``token`` (a DeFiBus token, ``dfb.<id>.<secret>``) is sent as ``Authorization: Bearer`` on
    every call; a proxy with ``[security]`` on answers calls without a valid one with
    :class:`ProxyError` 401 ``unauthenticated``, and actions the token's principal has no
    grant for with 403 ``permission_denied``.

    TLS (``https://`` only): ``ca_file`` is the CA that signed the proxy's certificate (the
    bus's CA; default: the system's CAs), ``cert_file``/``key_file`` a client certificate for
    mutual TLS (its principal then stands for a token), or ``ssl_context`` a ready
    :class:`ssl.SSLContext` instead of all three. A certificate failure raises
    :class:`TlsError`; plain ``http://`` to a TLS port is answered :class:`ProxyError` 400
    ``tls_required``."""

    def __init__(self, base_url, identity=None, timeout=30.0, token=None, ca_file=None,
                 cert_file=None, key_file=None, ssl_context=None):
        self.base_url = base_url.rstrip("/")
        self.identity = identity
        self.timeout = timeout
        self.token = token
        self.ssl_context = context_for(self.base_url, ca_file, cert_file, key_file, ssl_context)

    def publish(self, topic, value, key=None, tag=None, properties=None, traceparent=None,
                tracestate=None, ttl_ms=None, delay_ms=None, deliver_at_ms=None):
        """Publishes one message (``value`` str or bytes); returns where it was stored (topic,
        broker_id, queue_id, offset). ``traceparent``/``tracestate`` (W3C trace context) go
        as headers and reach every consumer. Raises :class:`RateLimited` past the rate
        limit.

        ``ttl_ms``: the message is never delivered once that long passed. ``delay_ms`` or
        ``deliver_at_ms`` (Unix ms): a delayed message, held by the broker until then; the
        answer's ``held_id`` cancels it (:meth:`cancel_delayed`)."""
        body = _with_kind(_message(topic, value, key, tag, properties), ttl_ms, delay_ms,
                          deliver_at_ms)
        return self._call("POST", "/v1/publish", self._with_identity(body),
                          trace_headers(traceparent, tracestate))

    def publish_service(self, service, value, key=None, tag=None, properties=None,
                        traceparent=None, tracestate=None):
        """Publishes one message to service id ``service``: the proxy sends it to the topic of
        the service's nearest deployment (it needs a GSL, ``defibus proxy --gsl``). Raises
        :class:`ProxyError` with code ``unknown_service`` when it is not deployed."""
        body = _message(None, value, key, tag, properties, service=service)
        return self._call("POST", "/v1/publish", self._with_identity(body),
                          trace_headers(traceparent, tracestate))

    def publish_batch(self, messages, traceparent=None, tracestate=None):
        """Publishes several messages (dicts with topic, value (str or bytes), key?, tag?,
        properties?, trace?); returns one result per message. ``traceparent``/``tracestate``
        apply to every message without a ``trace`` of its own."""
        batch = []
        for message in messages:
            message = dict(message)
            batch.append(put_value(message, message.pop("value")))
        body = self._with_identity({"messages": batch})
        return self._call("POST", "/v1/publish", body,
                          trace_headers(traceparent, tracestate))["results"]

    def cancel_delayed(self, held_id):
        """Cancels a delayed message by the ``held_id`` its publish answered. Raises
        :class:`ProxyError` with code ``held_settled`` (409) once it was delivered or
        cancelled, ``not_held`` (404) for an id that names none."""
        return self._call("POST", "/v1/delayed/cancel", {"id": held_id})

    def begin_transaction(self, producer_group, topic, value, key=None, tag=None,
                          properties=None, traceparent=None, tracestate=None):
        """Sends a transactional half: stored, invisible until :meth:`commit_transaction`.
        Returns ``{"id", "producer_group", "topic", "broker_id", "queue_id", "offset"}``. A
        half left without an outcome gets the broker's default (rollback) after its checks:
        the proxy cannot ask an HTTP caller, so it answers them "unknown"."""
        body = _message(topic, value, key, tag, properties)
        body["producer_group"] = producer_group
        return self._call("POST", "/v1/transactions", body,
                          trace_headers(traceparent, tracestate))

    def commit_transaction(self, half_id):
        """Delivers the half ``half_id`` (twice is no error; after a rollback raises
        :class:`ProxyError` ``held_settled``)."""
        return self._call("POST", "/v1/transactions/commit", {"id": half_id})

    def rollback_transaction(self, half_id):
        """Discards the half ``half_id``: it is never delivered (after a commit raises
        :class:`ProxyError` ``held_settled``)."""
        return self._call("POST", "/v1/transactions/rollback", {"id": half_id})

    def request(self, topic, value, timeout_ms=None, key=None, tag=None, properties=None,
                traceparent=None, tracestate=None):
        """Sends a request and returns the reply message (dict with ``value``, str or bytes,
        and ``trace`` when the reply carries a context: the responder's, or the request's as
        it went); raises :class:`ProxyTimeout` when no reply comes before ``timeout_ms``."""
        body = _message(topic, value, key, tag, properties)
        if timeout_ms is not None:
            body["timeout_ms"] = timeout_ms
        return decoded(self._call("POST", "/v1/request", self._with_identity(body),
                                  trace_headers(traceparent, tracestate)))

    def request_service(self, service, value, timeout_ms=None, key=None, tag=None,
                        properties=None, traceparent=None, tracestate=None):
        """:meth:`request` to service id ``service`` (its nearest deployment's topic)."""
        body = _message(None, value, key, tag, properties, service=service)
        if timeout_ms is not None:
            body["timeout_ms"] = timeout_ms
        return decoded(self._call("POST", "/v1/request", self._with_identity(body),
                                  trace_headers(traceparent, tracestate)))

    def reply(self, request, value, traceparent=None, tracestate=None):
        """Answers ``request`` -- a request message as delivered to a webhook (dict with
        ``topic``, ``queue_id``, ``reply_to``, ``correlation_id``) -- with ``value`` (str or
        bytes). The reply carries ``traceparent``/``tracestate`` when given (the responder's
        own span, say :func:`defibus_proxy.trace.child_of`), else the request's context as it
        was delivered. Raises :class:`ProxyError` with code ``no_requester`` when nobody waits
        any more."""
        body = {key: request[key] for key in ("topic", "queue_id", "reply_to", "correlation_id")}
        if traceparent is None:
            traceparent, tracestate = trace_of(request)
        self._call("POST", "/v1/reply", self._with_identity(put_value(body, value)),
                   trace_headers(traceparent, tracestate))

    def trace(self, topic, offset=None, key=None, queue=None, broker=None, search=None,
              matches=None):
        """One message's life (``GET /v1/trace``): when and where it was stored, which groups
        were pushed it and when each committed it, and for a request its deadline and reply.
        ``offset`` (of ``queue``, else of every queue), ``key`` (the newest ``matches`` among
        the newest ``search`` records), both (the message at ``offset`` if its key is
        ``key``) or neither (the newest message). Returns ``{"topic", "queues": [...]}``."""
        query = {"topic": topic, "offset": offset, "key": key, "queue": queue,
                 "broker": broker, "search": search, "matches": matches}
        params = urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        return self._call("GET", f"/v1/trace?{params}")

    def subscribe_webhook(self, topic, group, url, mode="clustering", start="committed"):
        """Asks the proxy to POST every message of ``topic`` to ``url`` (parse each body with
        :func:`parse_push`); returns the subscription (``id`` and counters). The subscription
        is durable: it outlives a proxy restart until :meth:`unsubscribe_webhook`. A request
        pushed to ``url`` may be answered in the response body (:func:`reply_body`) or with
        :meth:`reply`."""
        body = {
            "identity": self._require_identity(),
            "topic": topic,
            "group": group,
            "mode": mode,
            "start": start,
            "url": url,
        }
        return self._call("POST", "/v1/subscriptions", body)

    def subscription(self, subscription_id):
        """A webhook subscription and its delivery counters."""
        return self._call("GET", f"/v1/subscriptions/{subscription_id}")

    def unsubscribe_webhook(self, subscription_id):
        self._call("DELETE", f"/v1/subscriptions/{subscription_id}")

    def heartbeat(self):
        """Renews the lease of this identity's webhook subscriptions."""
        return self._call("POST", "/v1/heartbeat", {"identity": self._require_identity()})

    def post_raw(self, path, data, content_type="application/json"):
        """POSTs raw bytes; returns (status, parsed JSON or None). For tests and tools."""
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method="POST",
            headers=self._headers({"content-type": content_type}),
        )
        try:
            with self._open(request) as response:
                return response.status, _parse(response.read())
        except urllib.error.HTTPError as error:
            return error.code, _parse(error.read())

    def _headers(self, headers):
        if self.token is not None:
            headers["authorization"] = f"Bearer {self.token}"
        return headers

    def _with_identity(self, body):
        if self.identity is not None:
            body["identity"] = self.identity.to_json()
        return body

    def _require_identity(self):
        if self.identity is None:
            raise ValueError("this call needs an identity: HttpClient(url, identity=...)")
        return self.identity.to_json()

    def _call(self, method, path, body=None, extra_headers=None):
        data = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if data is not None else {}
        headers.update(extra_headers or {})
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers=self._headers(headers)
        )
        try:
            with self._open(request) as response:
                return _parse(response.read())
        except urllib.error.HTTPError as error:
            raise _error(error.code, _parse(error.read())) from None

    def _open(self, request):
        """Sends ``request``; TLS failures become :class:`TlsError`. urllib wraps those met
        while connecting in URLError, and raises those met reading the answer (a client
        certificate refused after a TLS 1.3 handshake) as they are."""
        try:
            return urllib.request.urlopen(request, timeout=self.timeout, context=self.ssl_context)
        except urllib.error.HTTPError:
            raise
        except urllib.error.URLError as error:
            if isinstance(error.reason, ssl.SSLError):
                raise tls_error(self.base_url, error.reason) from error.reason
            raise
        except ssl.SSLError as error:
            raise tls_error(self.base_url, error) from error


def _message(topic, value, key, tag, properties, service=None):
    body = put_value({"service": service} if service is not None else {"topic": topic}, value)
    if key is not None:
        body["key"] = key
    if tag is not None:
        body["tag"] = tag
    if properties:
        body["properties"] = dict(properties)
    return body


def _with_kind(body, ttl_ms, delay_ms, deliver_at_ms):
    """``body`` with the message-kind fields that are set."""
    for name, ms in (("ttl_ms", ttl_ms), ("delay_ms", delay_ms), ("deliver_at_ms", deliver_at_ms)):
        if ms is not None:
            body[name] = ms
    return body


def _parse(raw):
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _error(status, body):
    return error_from(status, body.get("error") if isinstance(body, dict) else None)
