"""TLS to a proxy with ``[tls]`` (``https://`` and ``wss://`` URLs), with the standard
library's :mod:`ssl`.

A bus trusts its own CA, not the web's: give the client that CA (``ca_file``, e.g. the
``certs/ca.pem`` of ``defibus certs dev``), or a ready :class:`ssl.SSLContext`. For mutual
TLS, ``cert_file``/``key_file`` are the client's certificate and key; the proxy then knows
the caller by the certificate's principal and no token is needed.

Certificate failures raise :class:`~defibus_proxy.errors.TlsError` (an :class:`ssl.SSLError`)
saying what to change; the original error is its ``__cause__``."""

import ssl

from .errors import TlsError


def context_for(url, ca_file=None, cert_file=None, key_file=None, ssl_context=None):
    """The :class:`ssl.SSLContext` for ``url``: ``ssl_context`` when given, else one trusting
    ``ca_file`` (the system's CAs without it) and presenting ``cert_file``/``key_file`` when
    set; ``None`` for a plaintext URL without TLS options."""
    if ssl_context is not None:
        return ssl_context
    secure = url.startswith(("https://", "wss://"))
    if not secure:
        if ca_file or cert_file or key_file:
            raise ValueError(f"{url} is not https:// or wss://: TLS options need a TLS URL")
        return None
    if key_file and not cert_file:
        raise ValueError("key_file needs cert_file")
    context = ssl.create_default_context(cafile=ca_file)
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


def tls_error(url, error):
    """The :class:`TlsError` for ``error``, an :class:`ssl.SSLError` met talking to ``url``,
    with a hint at the usual cause."""
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = error.verify_message or str(error)
        hint = (
            "the proxy's certificate is not signed by a CA this client trusts: pass "
            "ca_file= the bus's CA (e.g. certs/ca.pem) or ssl_context="
        )
        return TlsError(url, f"certificate verify failed: {reason}", hint)
    code = getattr(error, "reason", None) or ""
    if "CERTIFICATE_REQUIRED" in code:
        hint = "the proxy requires a client certificate: pass cert_file= and key_file="
    elif "UNKNOWN_CA" in code or "BAD_CERTIFICATE" in code or "CERTIFICATE" in code:
        hint = (
            "the proxy refused this client's certificate: pass cert_file=/key_file= signed "
            "by the proxy's CA"
        )
    elif "WRONG_VERSION_NUMBER" in code or "RECORD_LAYER" in code:
        hint = "the server at this address does not speak TLS: use http:// or ws://"
    else:
        hint = None
    return TlsError(url, str(error), hint)
