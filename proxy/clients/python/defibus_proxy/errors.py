"""Errors raised by the client: the proxy's ``{"error": {"code", "message"}}`` answers, and
TLS failures."""

import ssl


class ProxyError(Exception):
    """The proxy refused a call: HTTP-like ``status`` (0 on the WebSocket), stable ``code``."""

    def __init__(self, status, code, message):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class ProxyTimeout(ProxyError):
    """No reply came before the request's deadline (HTTP 504, code ``timeout``)."""


class RateLimited(ProxyError):
    """The caller's rate limit is spent (HTTP 429, code ``rate_limited``); ``retry_after`` is
    the wait in seconds the proxy asked for."""

    def __init__(self, status, code, message, retry_after):
        super().__init__(status, code, message)
        self.retry_after = retry_after


class TlsError(ssl.SSLError):
    """TLS with the proxy failed: its certificate is not trusted, it refused this client's
    certificate, or the address does not speak TLS. The message says which and what to change;
    ``url`` is the address, ``reason`` what the TLS library said, and ``__cause__`` the
    original :class:`ssl.SSLError`. Not retried: the same settings fail the same way."""

    def __init__(self, url, reason, hint=None):
        message = f"TLS with {url} failed: {reason}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)
        self.url = url
        self.reason = reason
        self.hint = hint

    def __str__(self):
        return self.args[0]


def error_from(status, error):
    """The exception for an ``{"code", "message", "retry_after_ms"?}`` error object."""
    error = error if isinstance(error, dict) else {}
    code = error.get("code", "unknown")
    message = error.get("message", "")
    if code == "rate_limited":
        return RateLimited(status, code, message, error.get("retry_after_ms", 0) / 1000)
    if code == "timeout":
        return ProxyTimeout(status, code, message)
    return ProxyError(status, code, message)
