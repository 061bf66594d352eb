//! TLS on the data plane against a real broker (registered over TLS with a TLS nameserver):
//! mutual TLS round trips, refused certificates, TLS/plaintext mismatches, and a stalled
//! handshake that holds nothing.

mod support;

use std::error::Error as _;
use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use client::{
    Admin, ClientError, ConsumeMode, Consumer, ConsumerOptions, Message, Producer, StartFrom,
};
use nameserver::NameserverHandle;
use tls::TlsSettings;
use tls::dev::{DevCa, DevCerts, Validity};

use support::{client_with, create_topic};

const WAIT: Duration = Duration::from_secs(30);
/// The brokers' frame timeout, which also bounds a TLS handshake.
const FRAME_TIMEOUT: Duration = Duration::from_millis(1000);
/// Every client here connects within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A broker with one shard on a free loopback port, registering with `nameserver`; TLS
/// with `tls`.
fn start_broker(
    nameserver: &NameserverHandle,
    dir: &Path,
    tls: Option<TlsSettings>,
) -> engine::Broker {
    let config = engine::BrokerConfig {
        broker_id: "broker-a".into(),
        cluster: "test".into(),
        area: "A10".into(),
        listen_address: "127.0.0.1".into(),
        port_base: 0,
        shards: 1,
        data_dir: dir.join("data"),
        nameservers: vec![nameserver.local_addr().to_string()],
        register_interval_ms: 200,
        frame_timeout_ms: FRAME_TIMEOUT.as_millis() as u64,
        tls,
        ..engine::BrokerConfig::default()
    };
    engine::Broker::start(config).expect("broker starts")
}

/// A nameserver and a broker speaking mutual TLS with the dev certificates in its directory.
struct TlsCluster {
    nameserver: NameserverHandle,
    broker: engine::Broker,
    certs: DevCerts,
    dir: tempfile::TempDir,
}

impl TlsCluster {
    fn start() -> Self {
        let _ = env_logger::builder().is_test(true).try_init();
        let dir = tempfile::tempdir().unwrap();
        let certs =
            tls::dev::generate(&dir.path().join("certs"), &["app", "admin", "broker"]).unwrap();
        // The nameserver speaks TLS too: clients with TLS use it for every connection, and
        // the broker registers over TLS with its own client certificate.
        let nameserver = nameserver::start(nameserver::NameserverConfig {
            tls: Some(certs.server_settings()),
            ..support::nameserver_config()
        })
        .expect("nameserver starts");
        let broker = start_broker(
            &nameserver,
            dir.path(),
            Some(certs.server_settings_as("broker")),
        );
        Self {
            nameserver,
            broker,
            certs,
            dir,
        }
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.broker.shard_ports()[0])
    }

    /// A client speaking TLS with `settings`.
    fn client(&self, settings: TlsSettings) -> client::Client {
        client_with(&self.nameserver, |c| {
            c.with_tls(settings).with_connect_timeout(CONNECT_TIMEOUT)
        })
    }
}

/// The TLS error a broker call from a client with `settings` fails with.
fn refusal(cluster: &TlsCluster, settings: TlsSettings) -> (ClientError, Duration) {
    let client = cluster.client(settings);
    let started = Instant::now();
    let err = Admin::new(&client)
        .list_topics(&cluster.endpoint())
        .expect_err("refused");
    (err, started.elapsed())
}

fn assert_tls_refusal(err: &ClientError, cause: &str) {
    assert!(matches!(err, ClientError::Tls { .. }), "{err}");
    assert!(!err.is_retryable(), "{err}");
    let source = err.source().map(ToString::to_string).unwrap_or_default();
    assert!(source.contains(cause), "{err}: {source}");
}

#[test]
fn mutual_tls_produce_and_consume_round_trip() {
    let cluster = TlsCluster::start();
    let admin_client = cluster.client(cluster.certs.client_settings("admin"));
    create_topic(
        &Admin::new(&admin_client),
        &cluster.endpoint(),
        "A10-7001",
        2,
    );
    let client = cluster.client(cluster.certs.client_settings("app"));
    let consumer = Consumer::subscribe_with(
        &client,
        ConsumerOptions::new("A10-7001", "tls", ConsumeMode::Clustering)
            .start_from(StartFrom::Earliest),
    )
    .unwrap();
    let producer = Producer::new(&client).unwrap();
    let sent: Vec<String> = (0..50).map(|i| format!("secret-{i}")).collect();
    for value in &sent {
        producer
            .send(Message::new("A10-7001", value.clone()))
            .unwrap();
    }
    // A body larger than one TLS record (16 KiB) and than one seal chunk.
    let large = "x".repeat(100_000);
    producer
        .send(Message::new("A10-7001", large.clone()))
        .unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < sent.len() + 1 {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "received {} of {}",
            got.len(),
            sent.len() + 1
        );
        if let Some(message) = consumer.recv(left).unwrap() {
            got.push(String::from_utf8(message.value).unwrap());
        }
    }
    got.sort();
    let mut want = sent.clone();
    want.push(large);
    want.sort();
    assert_eq!(got, want);
    let suite = client.tls_cipher_suite().expect("a TLS connection");
    assert!(suite.starts_with("TLS13_"), "{suite}");
}

#[test]
fn clients_without_a_good_certificate_are_refused_while_a_good_one_is_served() {
    let cluster = TlsCluster::start();
    let good = cluster.client(cluster.certs.client_settings("app"));
    let good_admin = Admin::new(&good);
    good_admin.list_topics(&cluster.endpoint()).unwrap();

    // No certificate at all: the broker demands one.
    let anonymous = TlsSettings {
        ca: Some(cluster.certs.ca.clone()),
        ..TlsSettings::default()
    };
    let (err, took) = refusal(&cluster, anonymous);
    assert_tls_refusal(&err, "CertificateRequired");
    assert!(took < CONNECT_TIMEOUT * 2, "{took:?}");

    // A certificate from another CA (that trusts the broker's CA, to get that far).
    let other = tempfile::tempdir().unwrap();
    let other = tls::dev::generate(other.path(), &["app"]).unwrap();
    let foreign = TlsSettings {
        ca: Some(cluster.certs.ca.clone()),
        ..other.client_settings("app")
    };
    let (err, _) = refusal(&cluster, foreign);
    assert_tls_refusal(&err, "UnknownCA");

    // An expired certificate from the right CA.
    let ca = DevCa::load(&cluster.certs.ca, &cluster.certs.ca_key).unwrap();
    let expired = ca.issue_client("late", Validity::expired()).unwrap();
    let (cert, key) = (
        cluster.dir.path().join("late.pem"),
        cluster.dir.path().join("late.key"),
    );
    std::fs::write(&cert, &expired.cert_pem).unwrap();
    std::fs::write(&key, &expired.key_pem).unwrap();
    let late = TlsSettings {
        cert: Some(cert),
        key: Some(key),
        ..cluster.certs.client_settings("app")
    };
    let (err, _) = refusal(&cluster, late);
    assert_tls_refusal(&err, "CertificateExpired");

    // A broker this client does not trust: refused by the client itself.
    let (err, _) = refusal(&cluster, other.client_settings("app"));
    assert_tls_refusal(&err, "UnknownIssuer");

    // The good client's connection was served throughout, and a new one still is.
    good_admin.list_topics(&cluster.endpoint()).unwrap();
    let fresh = cluster.client(cluster.certs.client_settings("app"));
    Admin::new(&fresh).list_topics(&cluster.endpoint()).unwrap();
}

#[test]
fn tls_against_plaintext_and_plaintext_against_tls_fail_fast() {
    let cluster = TlsCluster::start();
    // A plaintext client of the TLS broker: the broker's handshake fails on its first frame
    // and closes the connection.
    let plain = client_with(&cluster.nameserver, |c| {
        c.with_connect_timeout(CONNECT_TIMEOUT)
    });
    let started = Instant::now();
    let err = Admin::new(&plain)
        .list_topics(&cluster.endpoint())
        .expect_err("a plaintext client is refused");
    assert!(
        started.elapsed() < CONNECT_TIMEOUT * 2,
        "{:?}: {err}",
        started.elapsed()
    );
    // The cause, not a bare "disconnected": the server speaks TLS, and how to speak it too.
    assert!(matches!(err, ClientError::Protocol { .. }), "{err}");
    assert!(err.to_string().contains("speaks TLS"), "{err}");
    assert!(err.to_string().contains("--tls-ca"), "{err}");

    // A TLS client of a plaintext broker: the broker answers the ClientHello with a
    // plaintext error frame, which is no TLS.
    let dir = tempfile::tempdir().unwrap();
    let plaintext_broker = start_broker(&cluster.nameserver, dir.path(), None);
    let endpoint = format!("127.0.0.1:{}", plaintext_broker.shard_ports()[0]);
    let client = cluster.client(cluster.certs.client_settings("app"));
    let started = Instant::now();
    let err = Admin::new(&client)
        .list_topics(&endpoint)
        .expect_err("a TLS client of a plaintext broker fails");
    assert!(
        started.elapsed() < CONNECT_TIMEOUT * 2,
        "{:?}: {err}",
        started.elapsed()
    );
    assert!(matches!(err, ClientError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("does not speak TLS"), "{err}");
    // While it backs off, the same error comes back rather than a retryable disconnect.
    let again = Admin::new(&client).list_topics(&endpoint).unwrap_err();
    assert!(matches!(again, ClientError::Tls { .. }), "{again}");
    plaintext_broker.shutdown().unwrap();
}

#[test]
fn a_stalled_handshake_is_closed_within_the_frame_timeout_while_others_are_served() {
    let cluster = TlsCluster::start();
    let mut stalled = TcpStream::connect(cluster.endpoint()).unwrap();
    stalled.set_read_timeout(Some(WAIT)).unwrap();
    let started = Instant::now();
    // Meanwhile a good client connects and is served.
    let good = cluster.client(cluster.certs.client_settings("app"));
    Admin::new(&good).list_topics(&cluster.endpoint()).unwrap();
    // The stalled connection sent nothing: the broker closes it at the frame timeout.
    let mut byte = [0u8; 1];
    let read = stalled.read(&mut byte);
    let took = started.elapsed();
    assert!(
        matches!(read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "closed, not answered: {read:?}"
    );
    assert!(
        took >= FRAME_TIMEOUT.mul_f32(0.9),
        "closed after only {took:?}"
    );
    assert!(took < FRAME_TIMEOUT * 4, "closed only after {took:?}");
    Admin::new(&good).list_topics(&cluster.endpoint()).unwrap();
}
