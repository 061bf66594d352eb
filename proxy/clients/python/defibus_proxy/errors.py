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
