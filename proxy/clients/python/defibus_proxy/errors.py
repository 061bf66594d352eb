"""Errors raised by the client: the proxy's ``{"error": {"code", "message"}}`` answers."""


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
