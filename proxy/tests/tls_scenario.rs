//! A secured bus on TLS everywhere (nameserver, broker, and the proxy's listener and bus
//! connections) with the proxy on HTTPS and WSS: a bearer token or a client certificate
//! publishes and subscribes, plaintext HTTP to the TLS port is told to use TLS, a client
//! certificate of another CA is refused, and a stalled handshake is closed within the header
//! timeout, holding only its connection slot meanwhile, while a good client is served.

mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use auth::{Grant, Policy};
use client::{Admin, Client, ClientConfig};
use defibus_tests::{AREA, WAIT, broker_config, start_broker, start_nameserver};
use engine::Broker;
use nameserver::NameserverHandle;
use protocol::control::FlushMode;
use proxy::{ProxyConfig, ProxyHandle};
use serde_json::json;
use testkit::{retry_until, wait_until};
use tls::TlsSettings;
use tls::dev::DevCerts;
use tls::rustls::{ClientConnection, StreamOwned};
use tungstenite::client::IntoClientRequest;

use support::{connect_from, exchange, exchange_on, identity, post_request};

const TOPIC: &str = "A10-7601";
/// The proxy's header timeout, which also bounds its TLS handshakes.
const HEADER_TIMEOUT: Duration = Duration::from_millis(1000);

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// `admin` may do everything, `broker` act as a broker, the proxy everything its callers may;
/// `app` may produce to `A10-*` and consume it as groups `app-*`; `carol` nothing. Returns
/// the policy and `app`'s token.
fn policy() -> (Policy, String) {
    let mut policy = Policy {
        version: 1,
        ..Policy::default()
    };
    let grant = |principal: &str, action: &str, resource: &str, group: &str| {
        Grant::parse(principal, action, resource, group).unwrap()
    };
    policy.grant(grant("admin", "*", "*", "*"));
    policy.grant(grant("proxy", "*", "*", "*"));
    policy.grant(grant("broker", "broker", "*", "*"));
    policy.grant(grant("app", "produce", "A10-*", "*"));
    policy.grant(grant("app", "consume", "A10-*", "app-*"));
    let app = policy
        .issue_token("app", auth::now_ms(), 86_400_000)
        .unwrap()
        .reveal();
    (policy, app)
}

/// The bus and the proxy. Only callers authenticate with tokens: the broker and the proxy
/// are who their certificates name, to the nameserver and the broker alike.
struct TlsBus {
    proxy: Option<ProxyHandle>,
    broker: Option<Broker>,
    _nameserver: NameserverHandle,
    certs: DevCerts,
    app_token: String,
    dir: tempfile::TempDir,
}

impl TlsBus {
    fn start(adjust: impl FnOnce(&mut ProxyConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let certs = tls::dev::generate(
            &dir.path().join("certs"),
            &["admin", "broker", "proxy", "app", "carol"],
        )
        .unwrap();
        let (policy, app_token) = policy();
        let policy_file = dir.path().join("policy.json");
        std::fs::write(&policy_file, policy.to_json()).unwrap();
        let nameserver = start_nameserver(|c| {
            c.security.enabled = true;
            c.security.policy_file = Some(policy_file.clone());
            c.tls = Some(certs.server_settings());
        });
        let mut config = broker_config("broker-a", 1, &dir.path().join("broker"), &nameserver);
        config.security.enabled = true;
        config.security.policy_refresh_ms = 100;
        config.tls = Some(certs.server_settings_as("broker"));
        let broker = start_broker(config);

        let admin = Client::new(
            ClientConfig::new([nameserver.local_addr().to_string()], AREA)
                .unwrap()
                .with_request_timeout(Duration::from_secs(2))
                .with_tls(certs.client_settings("admin")),
        )
        .unwrap();
        let endpoint = defibus_tests::endpoint(broker.shard_ports()[0]);
        let topic = defibus_tests::topic_config(TOPIC, 2, FlushMode::Async);
        retry_until("the admin creates the topic", WAIT, || {
            Admin::new(&admin).create_topic(&endpoint, &topic)
        });
        wait_until("the topic is routed", WAIT, || {
            Admin::new(&admin).topic_route(TOPIC).is_ok()
        });

        let mut proxy_config = ProxyConfig {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            nameservers: vec![nameserver.local_addr().to_string()],
            data_dir: dir.path().join("proxy"),
            // Callers may come with a token instead of a certificate.
            tls: Some(TlsSettings {
                client_auth: tls::ClientAuth::Optional,
                ..certs.server_settings_as("proxy")
            }),
            ..ProxyConfig::default()
        };
        proxy_config.security.enabled = true;
        proxy_config.security.policy_refresh_ms = 100;
        proxy_config.limits.header_timeout_ms = HEADER_TIMEOUT.as_millis() as u64;
        adjust(&mut proxy_config);
        let proxy = proxy::start(proxy_config).expect("the proxy starts on TLS");
        Self {
            proxy: Some(proxy),
            broker: Some(broker),
            _nameserver: nameserver,
            certs,
            app_token,
            dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.proxy.as_ref().unwrap().local_addr()
    }

    /// Trusts the bus's CA and presents `principal`'s certificate (none for a principal
    /// without one, such as "nobody").
    fn caller(&self, principal: &str) -> TlsSettings {
        self.certs.client_settings(principal)
    }

    /// POSTs `body` to `path` over HTTPS as `settings` with `token` as the bearer; returns
    /// (status, JSON body), or the error that ended the exchange.
    fn post(
        &self,
        settings: &TlsSettings,
        token: Option<&str>,
        path: &str,
        body: &serde_json::Value,
    ) -> std::io::Result<(u16, serde_json::Value)> {
        let mut stream = connect_tls(TcpStream::connect(self.addr()).unwrap(), settings);
        let (status, text) = exchange_on(&mut stream, &request(path, token, &body.to_string()))?;
        Ok((status, serde_json::from_str(&text).unwrap_or_default()))
    }

    fn publish(
        &self,
        settings: &TlsSettings,
        token: Option<&str>,
        value: &str,
    ) -> (u16, serde_json::Value) {
        self.post(
            settings,
            token,
            "/v1/publish",
            &json!({"topic": TOPIC, "value": value}),
        )
        .expect("an HTTPS exchange")
    }
}

impl Drop for TlsBus {
    fn drop(&mut self) {
        if let Some(proxy) = self.proxy.take() {
            proxy.shutdown().unwrap();
        }
        if let Some(broker) = self.broker.take() {
            broker.shutdown().unwrap();
        }
    }
}

/// A TLS client over `tcp` with `settings`, verifying the proxy's certificate for its IP
/// address; reads time out after [`WAIT`]. The handshake runs with the first write.
fn connect_tls(tcp: TcpStream, settings: &TlsSettings) -> TlsStream {
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let peer = tcp.peer_addr().unwrap().to_string();
    let config = tls::client_config(settings).expect("client TLS settings");
    let name = tls::server_name(settings, &peer).unwrap();
    let connection = ClientConnection::new(Arc::clone(&config), name).unwrap();
    StreamOwned::new(connection, tcp)
}

/// A `POST` with a JSON body and, if given, a bearer token; the connection closes after it.
fn request(path: &str, token: Option<&str>, body: &str) -> String {
    let authorization = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n\
         {authorization}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn over_https_and_wss_a_bearer_token_or_a_client_certificate_publishes_and_subscribes() {
    let bus = TlsBus::start(|_| {});
    let anonymous = bus.caller("nobody");

    // A WSS session authenticated with the bearer header, no client certificate.
    let mut upgrade = format!("wss://{}/v1/stream", bus.addr())
        .into_client_request()
        .unwrap();
    upgrade.headers_mut().insert(
        "authorization",
        format!("Bearer {}", bus.app_token).parse().unwrap(),
    );
    let tcp = TcpStream::connect(bus.addr()).unwrap();
    let (socket, response) = tungstenite::client(upgrade, connect_tls(tcp, &anonymous))
        .expect("the WSS upgrade with a bearer token");
    assert_eq!(response.status().as_u16(), 101);
    let mut stream = support::Stream::over(socket);
    stream.send(json!({"type": "hello", "identity": identity("tls-ws")}));
    assert_eq!(stream.recv()["type"], "welcome");
    stream.send(json!({
        "type": "subscribe", "ref": 1, "topic": TOPIC, "group": "app-tls", "start": "earliest",
    }));
    assert_eq!(stream.recv_type("subscribed")["ref"], 1);

    // HTTPS with the token, then with app's certificate and no token: both are `app`.
    let (status, body) = bus.publish(&anonymous, Some(&bus.app_token), "by token");
    assert_eq!(status, 200, "{body}");
    let (status, body) = bus.publish(&bus.caller("app"), None, "by certificate");
    assert_eq!(status, 200, "{body}");
    // And over the WSS session itself; pushes may come before its answer.
    stream.send(json!({"type": "publish", "ref": 2, "topic": TOPIC, "value": "by wss"}));
    let (mut published, mut values) = (false, Vec::new());
    while !published || values.len() < 3 {
        let frame = stream.recv();
        match frame["type"].as_str() {
            Some("published") => published = true,
            Some("message") => {
                values.push(frame["message"]["value"].as_str().unwrap().to_owned());
                stream.send(json!({"type": "ack", "delivery": frame["delivery"]}));
            }
            _ => {}
        }
    }
    values.sort();
    assert_eq!(values, ["by certificate", "by token", "by wss"]);

    // Neither a token nor a certificate: 401. A certificate without grants: 403 naming it.
    let (status, body) = bus.publish(&anonymous, None, "nobody");
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthenticated");
    let (status, body) = bus.publish(&bus.caller("carol"), None, "carol");
    assert_eq!(status, 403, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    for part in ["carol", "produce", TOPIC] {
        assert!(message.contains(part), "{message} names {part}");
    }
}

#[test]
fn plaintext_http_to_the_tls_port_is_told_to_use_tls() {
    let bus = TlsBus::start(|_| {});
    let mut plain = TcpStream::connect(bus.addr()).unwrap();
    let (status, body) = exchange(
        &mut plain,
        &post_request("/v1/publish", r#"{"topic":"A10-7601","value":"x"}"#, true),
    )
    .expect("a plaintext answer");
    assert_eq!(status, 400, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "tls_required", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("https://"),
        "{body}"
    );
    let (status, body) = bus.publish(&bus.caller("app"), None, "after plaintext");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_client_certificate_of_another_ca_is_refused_while_good_clients_are_served() {
    let bus = TlsBus::start(|_| {});
    let other = tls::dev::generate(&bus.dir.path().join("other"), &["app"]).unwrap();
    let foreign = TlsSettings {
        ca: Some(bus.certs.ca.clone()),
        ..other.client_settings("app")
    };
    let refused = bus.post(
        &foreign,
        None,
        "/v1/publish",
        &json!({"topic": TOPIC, "value": "foreign"}),
    );
    let err = refused.expect_err("a certificate of another CA is refused");
    assert!(err.to_string().contains("UnknownCA"), "{err}");
    let (status, body) = bus.publish(&bus.caller("app"), None, "good");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_stalled_handshake_is_closed_within_the_header_timeout_holding_only_its_slot() {
    let bus = TlsBus::start(|c| c.limits.connections_per_ip_max = 2);
    let started = Instant::now();
    // Two connections from 127.0.0.1 that never start their handshakes take its two slots.
    let mut stalled: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(bus.addr()).unwrap())
        .collect();
    // A good client from another address is served meanwhile.
    let good = bus.caller("app");
    let mut other = connect_tls(connect_from("127.0.0.2", bus.addr()), &good);
    let publish = request(
        "/v1/publish",
        None,
        &json!({"topic": TOPIC, "value": "served"}).to_string(),
    );
    let (status, body) = exchange_on(&mut other, &publish).expect("served from 127.0.0.2");
    assert_eq!(status, 200, "{body}");
    // A third from 127.0.0.1 is over its cap: closed at accept, not after a timeout.
    let mut third = TcpStream::connect(bus.addr()).unwrap();
    third.set_read_timeout(Some(WAIT)).unwrap();
    let refused_at = Instant::now();
    let read = third.read(&mut [0u8; 1]);
    assert!(matches!(read, Ok(0)) || read.is_err(), "{read:?}");
    assert!(
        refused_at.elapsed() < HEADER_TIMEOUT / 2,
        "refused only after {:?}",
        refused_at.elapsed()
    );

    for connection in &mut stalled {
        connection.set_read_timeout(Some(WAIT)).unwrap();
        let read = connection.read(&mut [0u8; 1]);
        assert!(
            matches!(read, Ok(0))
                || read.is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock),
            "closed, not answered"
        );
    }
    let took = started.elapsed();
    assert!(
        took >= HEADER_TIMEOUT.mul_f32(0.9),
        "closed after only {took:?}"
    );
    assert!(took < HEADER_TIMEOUT * 4, "closed only after {took:?}");
    // Their slots are free again.
    let mut attempts = 0;
    wait_until("127.0.0.1 is served again", WAIT, || {
        attempts += 1;
        let tcp = TcpStream::connect(bus.addr()).unwrap();
        let mut stream = connect_tls(tcp, &good);
        matches!(exchange_on(&mut stream, &publish), Ok((200, _)))
    });
    eprintln!("127.0.0.1 was served again after {attempts} attempts");
}
