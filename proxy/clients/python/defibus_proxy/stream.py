"""A WebSocket session with the proxy (``GET /v1/stream``), with reconnection.

Threads: a reader (owns the socket, reconnects it), a dispatcher (runs subscription
callbacks and request handlers, in arrival order) and a heartbeat sender. A message is
acked when its callback returns (``auto_ack``) or when the callback calls
:meth:`Delivery.ack`; the proxy commits only acked messages, so after a reconnect -- or a
proxy restart -- every unacked message is delivered again (at least once: dedupe on
``(topic, queue_id, offset)`` if a repeat matters).
"""

import itertools
import json
import logging
import queue
import ssl
import threading
import time

try:
    import websocket
except ImportError:  # HttpClient works without it; StreamClient says what to install.
    websocket = None

from .errors import ProxyError, ProxyTimeout, TlsError, error_from
from .tls import context_for, tls_error
from .trace import trace_object
from .values import decoded, put_value

log = logging.getLogger("defibus_proxy")

_STOP = object()


class Delivery:
    """A pushed message: ``message`` is the dict (topic, queue_id, offset, value, ...), its
    ``value`` a str, or bytes when the payload is not UTF-8."""

    def __init__(self, client, epoch, delivery_id, message):
        self._client = client
        self._epoch = epoch
        self.delivery_id = delivery_id
        self.message = decoded(message)
        self.acked = False

    @property
    def value(self):
        return self.message["value"]

    def ack(self):
        """Acknowledges the message; nothing happens if the session it came on is gone
        (the message will come again)."""
        if not self.acked:
            self.acked = True
            self._client._send_in_epoch(self._epoch, {"type": "ack", "delivery": self.delivery_id})

    def nack(self, reason=""):
        """Rejects the message: the broker redelivers it after the group's backoff (past its
        ``max_redeliveries`` it dead-letters it) and it counts as consumed. Waits for the
        proxy's answer; raises :class:`ProxyError` when the nack is refused (the message is
        then still unacked). False when the session it came on is gone (it will come again).
        Clustering subscriptions only."""
        if self.acked:
            return True
        if self._epoch != self._client._epoch:
            return False
        self._client._call({"type": "nack", "delivery": self.delivery_id, "reason": reason})
        self.acked = True
        return True


class Subscription:
    """A subscription kept across reconnects."""

    def __init__(self, topic, group, mode, start, responder, callback, auto_ack):
        self.topic = topic
        self.group = group
        self.mode = mode
        self.start = start
        self.responder = responder
        self.callback = callback
        self.auto_ack = auto_ack
        self.server_id = None

    def _frame(self, ref):
        return {
            "type": "subscribe",
            "ref": ref,
            "topic": self.topic,
            "group": self.group,
            "mode": self.mode,
            "start": self.start,
            "responder": self.responder,
        }


class _Pending:
    def __init__(self):
        self.done = threading.Event()
        self.frame = None
        self.error = None
        self.subscription = None


class StreamClient:
    """A WebSocket session. ``url`` is the proxy's base URL (``http://host:port``, or
    ``https://`` for a proxy with ``[tls]``) or the stream URL (``ws://host:port/v1/stream``,
    ``wss://``). ``token`` is sent as ``Authorization: Bearer`` on the handshake; a refused
    handshake raises :class:`ProxyError` with the proxy's status and code (401
    ``unauthenticated``).

    TLS (``wss://`` only): ``ca_file``, ``cert_file``/``key_file`` and ``ssl_context`` as for
    :class:`HttpClient`. A certificate failure raises :class:`TlsError` from :meth:`connect`;
    after a connection was lost, reconnects go on trying (and logging) whatever the error."""

    def __init__(
        self,
        url,
        identity,
        reconnect=True,
        heartbeat_interval=3.0,
        backoff_min=0.1,
        backoff_max=2.0,
        timeout=30.0,
        token=None,
        ca_file=None,
        cert_file=None,
        key_file=None,
        ssl_context=None,
    ):
        if websocket is None:
            raise ImportError("StreamClient needs websocket-client: pip install websocket-client")
        if url.startswith("http"):
            url = "ws" + url[len("http"):].rstrip("/") + "/v1/stream"
        self.url = url
        self.ssl_context = context_for(url, ca_file, cert_file, key_file, ssl_context)
        self.identity = identity
        self.reconnect = reconnect
        self.heartbeat_interval = heartbeat_interval
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.timeout = timeout
        # Sent as `Authorization: Bearer` on the handshake (and on every reconnect).
        self.token = token
        self.client_id = None
        self.reconnects = 0
        self._ws = None
        self._epoch = 0
        self._send_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._connected = threading.Event()
        self._closing = threading.Event()
        self._refs = itertools.count(1)
        self._pending = {}
        self._subscriptions = []
        self._by_server_id = {}
        self._work = queue.Queue()
        self._threads = []

    # -- life ------------------------------------------------------------------------------

    def connect(self):
        """Opens the session (hello); raises on failure. Returns self."""
        self._open()
        for target, name in (
            (self._read_loop, "reader"),
            (self._dispatch_loop, "dispatcher"),
            (self._heartbeat_loop, "heartbeat"),
        ):
            thread = threading.Thread(target=target, name=f"defibus-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def close(self):
        """Says goodbye and stops every thread."""
        if self._closing.is_set():
            return
        self._closing.set()
        try:
            self._send({"type": "goodbye"})
        except (ConnectionError, websocket.WebSocketException, OSError):
            pass
        self._work.put(_STOP)
        for thread in self._threads:
            thread.join(timeout=5)
        self._drop_socket()

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc):
        self.close()

    # -- calls -----------------------------------------------------------------------------

    def publish(self, topic, value, key=None, tag=None, properties=None, traceparent=None,
                tracestate=None, ttl_ms=None, delay_ms=None, deliver_at_ms=None):
        """Publishes one message (``value`` str or bytes, with a W3C trace context when
        ``traceparent`` is given); returns where it was stored. Raises :class:`RateLimited`
        past the session's rate limit. ``ttl_ms``, ``delay_ms`` and ``deliver_at_ms`` as in
        :meth:`HttpClient.publish` (a delayed message's answer carries its ``held_id``)."""
        frame = _message("publish", topic, value, key, tag, properties,
                         trace=trace_object(traceparent, tracestate))
        for name, ms in (("ttl_ms", ttl_ms), ("delay_ms", delay_ms),
                         ("deliver_at_ms", deliver_at_ms)):
            if ms is not None:
                frame[name] = ms
        return self._call(frame)

    def publish_service(self, service, value, key=None, tag=None, properties=None,
                        traceparent=None, tracestate=None):
        """:meth:`publish` to service id ``service`` (its nearest deployment's topic; the proxy
        needs a GSL)."""
        frame = _message("publish", None, value, key, tag, properties, service=service,
                         trace=trace_object(traceparent, tracestate))
        return self._call(frame)

    def request(self, topic, value, timeout_ms=3000, key=None, tag=None, properties=None,
                traceparent=None, tracestate=None):
        """Sends a request and returns the reply message (dict with ``value``, str or bytes,
        and ``trace`` when the reply carries a context); raises :class:`ProxyTimeout` at the
        deadline."""
        frame = _message("request", topic, value, key, tag, properties,
                         trace=trace_object(traceparent, tracestate))
        frame["timeout_ms"] = timeout_ms
        reply = self._call(frame, timeout=timeout_ms / 1000 + self.timeout)["message"]
        return decoded(reply)

    def subscribe(self, topic, group, callback, mode="clustering", start="committed", auto_ack=True):
        """Calls ``callback(delivery)`` for each message of ``topic``, in order, on the
        dispatcher thread; with ``auto_ack`` the message is acked when the callback returns
        without raising."""
        return self._add(Subscription(topic, group, mode, start, False, callback, auto_ack))

    def respond(self, topic, group, handler):
        """Answers requests of ``topic`` as a member of ``group``: ``handler(message)``
        returns the reply value (str or bytes; anything else is sent as its ``str``), or a
        ``(value, traceparent)`` pair to give the reply a trace context of its own (without
        one the reply carries the request's, ``message["trace"]``)."""
        return self._add(Subscription(topic, group, "clustering", "committed", True, handler, False))

    def unsubscribe(self, subscription):
        with self._state_lock:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)
            server_id = subscription.server_id
        if server_id is not None:
            self._call({"type": "unsubscribe", "subscription": server_id})

    def heartbeat(self):
        """A heartbeat round trip (the heartbeat thread sends them without waiting)."""
        return self._call({"type": "heartbeat"})

    # -- internals -------------------------------------------------------------------------

    def _add(self, subscription):
        # The reader registers the subscription as it reads `subscribed`, before any push.
        self._call(subscription._frame(None), subscription=subscription)
        with self._state_lock:
            self._subscriptions.append(subscription)
        return subscription

    def _call(self, frame, timeout=None, subscription=None):
        timeout = self.timeout if timeout is None else timeout
        if not self._connected.wait(timeout):
            raise ConnectionError("not connected to the proxy")
        ref = next(self._refs)
        frame = dict(frame, ref=ref)
        pending = _Pending()
        pending.subscription = subscription
        self._pending[ref] = pending
        try:
            self._send(frame)
            if not pending.done.wait(timeout):
                raise ProxyTimeout(0, "timeout", f"no answer to {frame['type']} in {timeout} s")
        finally:
            self._pending.pop(ref, None)
        if pending.error is not None:
            raise pending.error
        return pending.frame

    def _send(self, frame):
        with self._send_lock:
            if self._ws is None:
                raise ConnectionError("not connected to the proxy")
            self._ws.send(json.dumps(frame))

    def _send_in_epoch(self, epoch, frame):
        with self._send_lock:
            if self._ws is None or epoch != self._epoch:
                return
            try:
                self._ws.send(json.dumps(frame))
            except (websocket.WebSocketException, OSError) as error:
                log.debug("send failed: %s", error)

    def _open(self):
        """Connects, says hello and re-subscribes; frames that arrive meanwhile are handled."""
        header = [f"Authorization: Bearer {self.token}"] if self.token is not None else None
        sslopt = {"context": self.ssl_context} if self.ssl_context is not None else None
        try:
            ws = websocket.create_connection(
                self.url, timeout=self.timeout, header=header, sslopt=sslopt
            )
        except websocket.WebSocketBadStatusException as error:
            raise _handshake_error(error) from None
        except ssl.SSLError as error:
            if isinstance(error, TlsError):
                raise
            raise tls_error(self.url, error) from error
        ws.send(json.dumps({"type": "hello", "identity": self.identity.to_json()}))
        welcome = self._recv_until(ws, lambda f: f.get("type") in ("welcome", "error"))
        if welcome.get("type") != "welcome":
            ws.close()
            raise ProxyError(0, welcome.get("code"), welcome.get("message"))
        with self._send_lock:
            self._epoch += 1
            self._ws = ws
        self.client_id = welcome["client_id"]
        with self._state_lock:
            subscriptions = list(self._subscriptions)
            self._by_server_id.clear()
        for subscription in subscriptions:
            ref = f"resubscribe-{next(self._refs)}"
            ws.send(json.dumps(subscription._frame(ref)))
            answer = self._recv_until(ws, lambda f, ref=ref: f.get("ref") == ref)
            if answer.get("type") != "subscribed":
                raise ProxyError(0, answer.get("code"), answer.get("message"))
            with self._state_lock:
                subscription.server_id = answer["subscription"]
                self._by_server_id[subscription.server_id] = subscription
        ws.settimeout(0.5)
        self._connected.set()

    def _recv_until(self, ws, wanted):
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            frame = json.loads(ws.recv())
            if wanted(frame):
                return frame
            self._handle(frame)
        raise ProxyTimeout(0, "timeout", "the proxy did not answer")

    def _read_loop(self):
        while not self._closing.is_set():
            try:
                text = self._ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketException, OSError, AttributeError) as error:
                if self._closing.is_set():
                    return
                log.info("proxy connection lost: %s", error)
                self._lost()
                if not self.reconnect or not self._reconnect():
                    return
                continue
            if not text:
                continue
            try:
                self._handle(json.loads(text))
            except ValueError:
                log.warning("unparsable frame from the proxy: %r", text[:200])

    def _lost(self):
        self._connected.clear()
        self._drop_socket()
        for pending in list(self._pending.values()):
            pending.error = ConnectionError("connection to the proxy lost")
            pending.done.set()

    def _reconnect(self):
        backoff = self.backoff_min
        while not self._closing.is_set():
            try:
                self._open()
                self.reconnects += 1
                log.info("reconnected to the proxy as %s", self.client_id)
                return True
            except (websocket.WebSocketException, OSError, ProxyError, ValueError) as error:
                log.debug("reconnect failed: %s", error)
                self._drop_socket()
            time.sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max)
        return False

    def _drop_socket(self):
        with self._send_lock:
            ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close(timeout=0.2)
            except (websocket.WebSocketException, OSError):
                pass

    def _handle(self, frame):
        kind = frame.get("type")
        if kind in ("message", "request"):
            with self._state_lock:
                subscription = self._by_server_id.get(frame.get("subscription"))
            if subscription is None:
                log.debug("push for unknown subscription %s", frame.get("subscription"))
                return
            delivery = Delivery(self, self._epoch, frame["delivery"], frame["message"])
            self._work.put((subscription, kind, delivery))
            return
        ref = frame.get("ref")
        pending = self._pending.get(ref) if ref is not None else None
        if pending is None:
            if kind == "error":
                log.warning("proxy error: %s: %s", frame.get("code"), frame.get("message"))
            return
        if kind == "subscribed" and pending.subscription is not None:
            with self._state_lock:
                pending.subscription.server_id = frame["subscription"]
                self._by_server_id[frame["subscription"]] = pending.subscription
        if kind == "error":
            pending.error = error_from(0, frame)
        pending.frame = frame
        pending.done.set()

    def _dispatch_loop(self):
        while True:
            item = self._work.get()
            if item is _STOP:
                return
            subscription, kind, delivery = item
            try:
                if kind == "request":
                    value = subscription.callback(delivery.message)
                    reply = {"type": "reply", "delivery": delivery.delivery_id}
                    if isinstance(value, tuple) and len(value) == 2:
                        value, traceparent = value
                        reply["trace"] = trace_object(traceparent)
                    if not isinstance(value, (str, bytes, bytearray)):
                        value = str(value)
                    self._send_in_epoch(delivery._epoch, put_value(reply, value))
                else:
                    subscription.callback(delivery)
                    if subscription.auto_ack:
                        delivery.ack()
            except Exception:  # noqa: BLE001 - a callback's failure must not stop the loop
                log.exception("callback for %s failed; the message is not acked", subscription.topic)

    def _heartbeat_loop(self):
        while not self._closing.wait(self.heartbeat_interval):
            if self._connected.is_set():
                self._send_in_epoch(self._epoch, {"type": "heartbeat"})


def _message(kind, topic, value, key, tag, properties, service=None, trace=None):
    target = {"service": service} if service is not None else {"topic": topic}
    frame = put_value({"type": kind, **target}, value)
    if trace is not None:
        frame["trace"] = trace
    if key is not None:
        frame["key"] = key
    if tag is not None:
        frame["tag"] = tag
    if properties:
        frame["properties"] = dict(properties)
    return frame


def _handshake_error(error):
    """The proxy's error answer to a refused WebSocket handshake, as a :class:`ProxyError`."""
    status = getattr(error, "status_code", 0)
    body = getattr(error, "resp_body", None) or b""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        return error_from(status, parsed["error"])
    return ProxyError(status, "handshake_refused", str(error))
