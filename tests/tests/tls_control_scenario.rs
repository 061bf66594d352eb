//! A secured bus on TLS end to end (`[security]` and `[tls]` with mutual TLS everywhere, no
//! tokens): the broker registers with the nameserver and fetches the policy as the
//! principal of its certificate, the GSL fetches the policy over TLS, a client with a
//! certificate produces and consumes, a plaintext client and a client of another CA are
//! refused at the nameserver, and a stalled handshake there is closed at the frame timeout
//! while a good client is served.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use auth::{Grant, Policy};
use client::{Admin, Client, ClientConfig, ClientError, ConsumeMode, Consumer, Message, Producer};
use defibus_tests::{AREA, WAIT, broker_config, start_broker, start_nameserver};
use engine::Broker;
use nameserver::NameserverHandle;
use protocol::codes::{Command, Status};
use protocol::control::FlushMode;
use testkit::{retry_until, wait_until};
use tls::TlsSettings;
use tls::dev::DevCerts;

const TOPIC: &str = "A10-3801";
/// The nameserver's frame timeout, which bounds its TLS handshakes.
const FRAME_TIMEOUT: Duration = Duration::from_millis(1000);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// `admin` may do everything, `broker` act as a broker, `app` produce and consume `A10-*`.
fn policy() -> Policy {
    let mut policy = Policy {
        version: 1,
        ..Policy::default()
    };
    let grant = |principal: &str, action: &str, resource: &str, group: &str| {
        Grant::parse(principal, action, resource, group).unwrap()
    };
    policy.grant(grant("admin", "*", "*", "*"));
    policy.grant(grant("broker", "broker", "*", "*"));
    policy.grant(grant("app", "produce", "A10-*", "*"));
    policy.grant(grant("app", "consume", "A10-*", "app-*"));
    policy
}

struct Bus {
    dir: tempfile::TempDir,
    certs: DevCerts,
    nameserver: NameserverHandle,
    broker: Broker,
}

impl Bus {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let certs = tls::dev::generate(
            &dir.path().join("certs"),
            &["admin", "app", "broker", "gsl"],
        )
        .unwrap();
        let policy_file = dir.path().join("policy.json");
        std::fs::write(&policy_file, policy().to_json()).unwrap();
        let nameserver = start_nameserver(|c| {
            c.security.enabled = true;
            c.security.policy_file = Some(policy_file.clone());
            c.frame_timeout_ms = FRAME_TIMEOUT.as_millis() as u64;
            c.tls = Some(certs.server_settings());
        });
        // No token: the broker is `broker` by its certificate, to the nameserver (policy,
        // registration) as to its own clients.
        let mut config = broker_config("broker-a", 1, &dir.path().join("broker"), &nameserver);
        config.security.enabled = true;
        config.security.policy_refresh_ms = 100;
        config.tls = Some(certs.server_settings_as("broker"));
        let broker = start_broker(config);
        Self {
            dir,
            certs,
            nameserver,
            broker,
        }
    }

    fn client(&self, tls: Option<TlsSettings>) -> Client {
        let mut config = ClientConfig::new([self.nameserver.local_addr().to_string()], AREA)
            .unwrap()
            .with_request_timeout(REQUEST_TIMEOUT)
            .with_connect_timeout(REQUEST_TIMEOUT);
        if let Some(tls) = tls {
            config = config.with_tls(tls);
        }
        Client::new(config).unwrap()
    }

    fn broker_endpoint(&self) -> String {
        defibus_tests::endpoint(self.broker.shard_ports()[0])
    }
}

#[test]
fn a_bus_on_mutual_tls_registers_routes_produces_and_consumes_without_tokens() {
    let bus = Bus::start();
    let admin = bus.client(Some(bus.certs.client_settings("admin")));
    let topic = defibus_tests::topic_config(TOPIC, 2, FlushMode::Async);
    retry_until("the admin creates the topic", WAIT, || {
        Admin::new(&admin).create_topic(&bus.broker_endpoint(), &topic)
    });
    // Routed only once the broker registered it, over TLS, as `broker`.
    wait_until("the topic is routed", WAIT, || {
        Admin::new(&admin).topic_route(TOPIC).is_ok()
    });

    let app = bus.client(Some(bus.certs.client_settings("app")));
    let producer = Producer::new(&app).unwrap();
    for i in 0..10 {
        retry_until("a produce", WAIT, || {
            producer.send(Message::new(TOPIC, format!("m{i}")))
        });
    }
    let consumer = Consumer::subscribe(&app, TOPIC, "app-1", ConsumeMode::Clustering).unwrap();
    for received in 0..10 {
        let message = consumer.recv(WAIT).unwrap();
        assert!(message.is_some(), "app-1 received {received} of 10");
    }

    // The GSL fetches the policy from the TLS nameserver with its certificate: it then
    // serves a caller named by a certificate, and refuses an update without a grant.
    let gsl = gsl::start(gsl::GslConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: bus.dir.path().join("gsl"),
        security: auth::SecuritySettings {
            enabled: true,
            policy_nameservers: vec![bus.nameserver.local_addr().to_string()],
            policy_refresh_ms: 100,
            ..auth::SecuritySettings::default()
        },
        tls: Some(bus.certs.server_settings_as("gsl")),
        ..gsl::GslConfig::default()
    })
    .unwrap();
    let app_tls = svc::rpc::TlsClient::new(&bus.certs.client_settings("app")).unwrap();
    let mut to_gsl = svc::rpc::Connection::connect_with(
        &gsl.local_addr().to_string(),
        None,
        Some(&app_tls),
        REQUEST_TIMEOUT,
    )
    .unwrap();
    let update = protocol::control::GslUpdate {
        service_id: "3801".into(),
        deployments: Vec::new(),
    };
    let body = protocol::control::encode(&update).unwrap();
    let err = to_gsl
        .call(Command::GslUpdate, &body, REQUEST_TIMEOUT)
        .unwrap_err();
    assert_eq!(err.status(), Some(Status::PermissionDenied), "{err}");
    assert!(err.to_string().contains("\"app\""), "{err}");
}

#[test]
fn plaintext_and_foreign_clients_are_refused_at_the_nameserver_within_the_timeout() {
    let bus = Bus::start();

    let plain = bus.client(None);
    let started = Instant::now();
    let err = Admin::new(&plain)
        .topic_route(TOPIC)
        .expect_err("a plaintext client of a TLS nameserver is refused");
    assert!(
        started.elapsed() < REQUEST_TIMEOUT * 2,
        "{:?}: {err}",
        started.elapsed()
    );

    let other = tempfile::tempdir().unwrap();
    let other = tls::dev::generate(other.path(), &["app"]).unwrap();
    let foreign = TlsSettings {
        ca: Some(bus.certs.ca.clone()),
        ..other.client_settings("app")
    };
    let foreign = bus.client(Some(foreign));
    let started = Instant::now();
    let err = Admin::new(&foreign)
        .topic_route(TOPIC)
        .expect_err("a certificate of another CA is refused");
    assert!(started.elapsed() < REQUEST_TIMEOUT * 2, "{err}");
    assert!(matches!(err, ClientError::Tls { .. }), "{err}");
    let source = std::error::Error::source(&err)
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(source.contains("UnknownCA"), "{err}: {source}");
}

#[test]
fn a_stalled_handshake_on_the_nameserver_is_closed_at_the_frame_timeout() {
    let bus = Bus::start();
    let mut stalled = TcpStream::connect(bus.nameserver.local_addr()).unwrap();
    stalled.set_read_timeout(Some(WAIT)).unwrap();
    let started = Instant::now();
    let admin = bus.client(Some(bus.certs.client_settings("admin")));
    Admin::new(&admin).cluster_info().unwrap();
    let mut byte = [0u8; 1];
    let read = stalled.read(&mut byte);
    let took = started.elapsed();
    assert!(
        matches!(read, Ok(0)) || read.is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock),
        "closed, not answered"
    );
    assert!(
        took >= FRAME_TIMEOUT.mul_f32(0.9),
        "closed after only {took:?}"
    );
    assert!(took < FRAME_TIMEOUT * 4, "closed only after {took:?}");
    Admin::new(&admin).cluster_info().unwrap();
}
