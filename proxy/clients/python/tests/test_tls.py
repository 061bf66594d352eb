"""TLS: a secured bus on TLS everywhere (a nameserver and a broker with [security] and [tls],
`defibus certs dev` certificates, `defibus security init` tokens) and a `defibus proxy` on
HTTPS/WSS that reaches the bus over TLS too. Publish and consume work over https and wss with
a token (or a client certificate instead); an untrusted CA fails with a TlsError saying what
to change; a missing or bad token is the typed 401; plain http to the TLS port is told to use
TLS."""

import os
import queue
import ssl

import pytest

from conftest import DEFIBUS, Process, defibus, identity, wait_until
from defibus_proxy import HttpClient, ProxyError, StreamClient, TlsError

TOPIC = "A10-7701"
BAD_TOKEN = "dfb.0badc0de." + "00" * 32


class TlsBus:
    def __init__(self, root):
        self.certs = os.path.join(root, "certs")
        self.secrets = os.path.join(root, "secrets")
        self.ca = os.path.join(self.certs, "ca.pem")
        self.processes = []
        self.url = None

    def cert(self, name):
        return os.path.join(self.certs, name)

    def token(self, principal):
        with open(os.path.join(self.secrets, f"{principal}.token")) as file:
            return file.read().strip()

    def start(self, args, ready, log_ready=False):
        process = Process([DEFIBUS, *args], ready, log_ready=log_ready)
        self.processes.append(process)
        return process

    def stop(self):
        for process in reversed(self.processes):
            process.stop()


def _write(path, text):
    with open(path, "w") as file:
        file.write(text)
    return path


def _tls_table(bus, principal):
    """A server process's [tls]: the server certificate, and `principal`'s when it connects
    out."""
    return (
        "[tls]\n"
        f'cert = "{bus.cert("server.pem")}"\nkey = "{bus.cert("server.key")}"\n'
        f'ca = "{bus.ca}"\n'
        f'client_cert = "{bus.cert(principal + ".pem")}"\n'
        f'client_key = "{bus.cert(principal + ".key")}"\n'
    )


def _publishes(http):
    try:
        http.publish(TOPIC, "warm-up")
        return True
    except ProxyError:
        return False


@pytest.fixture(scope="module")
def tls_bus(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("tls-bus"))
    bus = TlsBus(root)
    defibus("certs", "dev", "--out", bus.certs)
    defibus("security", "init", "--out", bus.secrets)
    broker_data = os.path.join(root, "broker")
    try:
        nameserver_toml = _write(
            os.path.join(root, "nameserver.toml"),
            'listen_addr = "127.0.0.1:0"\n\n[security]\nenabled = true\n'
            f'policy_file = "{os.path.join(bus.secrets, "policy.json")}"\n\n'
            + _tls_table(bus, "admin"),
        )
        nameserver = bus.start(
            ["nameserver", "-c", nameserver_toml], r"nameserver listening on (\S+): ",
            log_ready=True,
        ).match.group(1)
        broker_toml = _write(
            os.path.join(root, "broker.toml"),
            "[security]\nenabled = true\n"
            f'token_file = "{os.path.join(bus.secrets, "broker.token")}"\n'
            "policy_refresh_ms = 200\n\n" + _tls_table(bus, "broker"),
        )
        bus.start(
            ["broker", "-c", broker_toml, "--data-dir", broker_data, "--port-base", 0,
             "--shards", 1, "--nameserver", nameserver],
            r"shard 0 port (\d+)",
        )
        # The topic, made by admin over TLS, authenticated by its client certificate.
        wait_until(
            "admin creates the topic over TLS",
            lambda: defibus(
                "admin", "topic", "create", "--topic", TOPIC, "--queues", 2,
                "--nameserver", nameserver, "--tls-ca", bus.ca,
                "--tls-cert", bus.cert("admin.pem"), "--tls-key", bus.cert("admin.key"),
                check=False,
            ).returncode == 0,
        )
        proxy = bus.start(
            ["proxy", "--listen-addr", "127.0.0.1:0", "--nameserver", nameserver,
             "--data-dir", os.path.join(root, "proxy"), "--secure",
             "--token-file", os.path.join(bus.secrets, "proxy.token"),
             "--tls-cert", bus.cert("server.pem"), "--tls-key", bus.cert("server.key"),
             "--tls-ca", bus.ca, "--tls-client-auth", "optional",
             "--tls-client-cert", bus.cert("proxy.pem"), "--tls-client-key", bus.cert("proxy.key")],
            r"proxy listening on (https://\S+)",
        )
        bus.url = proxy.match.group(1)
        bus.addr = bus.url.split("://", 1)[1]
        warm = HttpClient(bus.url, token=bus.token("app"), ca_file=bus.ca, timeout=5)
        wait_until("the topic is routed through the TLS bus", lambda: _publishes(warm))
        yield bus
    finally:
        bus.stop()


def test_publish_and_consume_over_https_and_wss_with_a_token(tls_bus):
    token = tls_bus.token("app")
    http = HttpClient(tls_bus.url, identity("tls-http"), token=token, ca_file=tls_bus.ca)
    received = queue.Queue()
    with StreamClient(tls_bus.url, identity("tls-ws"), token=token, ca_file=tls_bus.ca) as stream:
        assert stream.url.startswith("wss://"), stream.url
        stream.subscribe(TOPIC, "tls-group", lambda d: received.put(d.value), start="earliest")
        stored = http.publish(TOPIC, "over https")
        assert stored["topic"] == TOPIC
        stream.publish(TOPIC, "over wss")
        seen = set()
        wait_until(
            "both messages arrive over wss",
            lambda: _drain(received, seen) >= {"over https", "over wss"},
        )


def _drain(received, seen):
    while not received.empty():
        seen.add(received.get())
    return seen


def test_a_client_certificate_stands_for_a_token(tls_bus):
    http = HttpClient(tls_bus.url, ca_file=tls_bus.ca, cert_file=tls_bus.cert("app.pem"),
                      key_file=tls_bus.cert("app.key"))
    assert http.publish(TOPIC, "by certificate")["topic"] == TOPIC


def test_an_untrusted_ca_fails_with_a_clear_ssl_error(tls_bus, tmp_path):
    other = tmp_path / "other"
    defibus("certs", "dev", "--out", other)
    token = tls_bus.token("app")
    # The system's CAs (no ca_file), and another bus's CA.
    for trust in ({}, {"ca_file": str(other / "ca.pem")}):
        with pytest.raises(TlsError) as failed:
            HttpClient(tls_bus.url, token=token, timeout=5, **trust).publish(TOPIC, "x")
        error = failed.value
        assert isinstance(error, ssl.SSLError)
        assert isinstance(error.__cause__, ssl.SSLCertVerificationError), repr(error.__cause__)
        assert "certificate verify failed" in str(error), str(error)
        assert "ca_file" in str(error), str(error)
        assert error.url == tls_bus.url
    stream = StreamClient(tls_bus.url, identity("tls-untrusted"), reconnect=False, token=token,
                          ca_file=str(other / "ca.pem"), timeout=5)
    with pytest.raises(TlsError) as failed:
        stream.connect()
    assert "certificate verify failed" in str(failed.value), str(failed.value)


def test_a_missing_or_bad_token_gets_the_typed_auth_error(tls_bus):
    for token in (None, BAD_TOKEN):
        http = HttpClient(tls_bus.url, token=token, ca_file=tls_bus.ca)
        with pytest.raises(ProxyError) as refused:
            http.publish(TOPIC, "refused")
        assert (refused.value.status, refused.value.code) == (401, "unauthenticated"), token
    stream = StreamClient(tls_bus.url, identity("tls-bad-token"), reconnect=False,
                          token=BAD_TOKEN, ca_file=tls_bus.ca, timeout=5)
    with pytest.raises(ProxyError) as refused:
        stream.connect()
    assert (refused.value.status, refused.value.code) == (401, "unauthenticated")


def test_plain_http_to_the_tls_port_is_told_to_use_tls(tls_bus):
    plain = HttpClient(f"http://{tls_bus.addr}", token=tls_bus.token("app"), timeout=5)
    with pytest.raises(ProxyError) as refused:
        plain.publish(TOPIC, "plaintext")
    assert (refused.value.status, refused.value.code) == (400, "tls_required")
    assert "https://" in refused.value.message


def test_tls_options_need_a_tls_url():
    with pytest.raises(ValueError):
        HttpClient("http://127.0.0.1:1", ca_file="ca.pem")
