//! TLS on the shared frame server and the blocking RPC client, over real TCP on loopback:
//! a client certificate names the caller, plaintext and foreign certificates are refused
//! with errors that say so, and a stalled handshake is closed at the frame timeout while a
//! good client is served.

use std::future::Future;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::codes::Command;
use protocol::frame::Framer;
use svc::connection::{Answer, Caller, Handler};
use svc::limits::Limits;
use svc::rpc::{Connection, RpcError, TlsClient};
use svc::stream::TlsServer;
use tls::dev::{self, DevCerts};
use tokio::sync::{oneshot, watch};

/// How long a test waits for anything before failing: generous, since CI machines stall.
const PATIENCE: Duration = Duration::from_secs(10);
/// The frame deadline, which also bounds the handshake.
const FRAME_TIMEOUT: Duration = Duration::from_millis(400);

/// Answers every request with the caller's principal ("-" when anonymous).
struct WhoAmI {
    framer: Framer,
    tls: TlsServer,
}

impl Handler for WhoAmI {
    const NAME: &'static str = "whoami";

    fn framer(&self) -> &Framer {
        &self.framer
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_secs(600)
    }

    fn tls(&self) -> Option<&TlsServer> {
        Some(&self.tls)
    }

    fn handle(
        self: &Arc<Self>,
        caller: &Caller,
        _command: Command,
        _body: &[u8],
    ) -> impl Future<Output = Answer> + Send {
        let principal = caller.principal().unwrap_or("-").as_bytes().to_vec();
        std::future::ready(Answer::ok(principal))
    }
}

/// A TLS server on its own thread, stopped when dropped.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(certs: &DevCerts) -> Self {
        let tls = TlsServer::new(&certs.server_settings()).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let handler = Arc::new(WhoAmI {
                    framer: Framer::new(svc::config::frame_limits(1 << 20)),
                    tls,
                });
                let limits = Limits {
                    frame_timeout: FRAME_TIMEOUT,
                    ..Limits::new(64)
                };
                let (stop_tx, _) = watch::channel(false);
                svc::server::serve(listener, addr, handler, limits, stop_tx, async {
                    let _ = stopped.await;
                })
                .await;
            });
        });
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

fn who(connection: &mut Connection) -> Result<String, RpcError> {
    let frame = connection.call(Command::ClusterInfo, &[], PATIENCE)?;
    Ok(String::from_utf8(frame.body.to_vec()).unwrap())
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[test]
fn a_client_certificate_names_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev::generate(dir.path(), &["app", "broker"]).unwrap();
    let server = Server::start(&certs);
    let endpoint = server.addr.to_string();

    let app = TlsClient::new(&certs.client_settings("app")).unwrap();
    let mut connection = Connection::connect_with(&endpoint, None, Some(&app), PATIENCE).unwrap();
    assert_eq!(who(&mut connection).unwrap(), "app");
    assert_eq!(who(&mut connection).unwrap(), "app", "a second call");

    // A server process presents its client certificate, not the server's.
    let broker = TlsClient::new(&certs.server_settings_as("broker")).unwrap();
    let mut connection =
        Connection::connect_with(&endpoint, None, Some(&broker), PATIENCE).unwrap();
    assert_eq!(who(&mut connection).unwrap(), "broker");
}

#[test]
fn plaintext_and_foreign_clients_are_refused_with_errors_that_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev::generate(dir.path(), &["app"]).unwrap();
    let server = Server::start(&certs);
    let endpoint = server.addr.to_string();

    let started = Instant::now();
    let mut plain = Connection::connect(&endpoint, PATIENCE).unwrap();
    let err = who(&mut plain).unwrap_err();
    assert!(started.elapsed() < PATIENCE, "{:?}", started.elapsed());
    assert!(chain(&err).contains("speaks TLS"), "{}", chain(&err));

    // A certificate from another CA (trusting the server's CA, to get that far).
    let other = tempfile::tempdir().unwrap();
    let other = dev::generate(other.path(), &["app"]).unwrap();
    let foreign = tls::TlsSettings {
        ca: Some(certs.ca.clone()),
        ..other.client_settings("app")
    };
    let foreign = TlsClient::new(&foreign).unwrap();
    let err = Connection::connect_with(&endpoint, None, Some(&foreign), PATIENCE)
        .and_then(|mut c| who(&mut c))
        .unwrap_err();
    assert!(matches!(err, RpcError::Tls { .. }), "{}", chain(&err));
    assert!(chain(&err).contains("UnknownCA"), "{}", chain(&err));

    // No certificate at all, where one is required.
    let anonymous = TlsClient::new(&certs.client_settings("nobody")).unwrap();
    let err = Connection::connect_with(&endpoint, None, Some(&anonymous), PATIENCE)
        .and_then(|mut c| who(&mut c))
        .unwrap_err();
    assert!(
        chain(&err).contains("CertificateRequired"),
        "{}",
        chain(&err)
    );

    // The server is still serving good clients.
    let app = TlsClient::new(&certs.client_settings("app")).unwrap();
    let mut good = Connection::connect_with(&endpoint, None, Some(&app), PATIENCE).unwrap();
    assert_eq!(who(&mut good).unwrap(), "app");
}

#[test]
fn a_stalled_handshake_is_closed_at_the_frame_timeout_while_a_good_client_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev::generate(dir.path(), &["app"]).unwrap();
    let server = Server::start(&certs);
    let endpoint = server.addr.to_string();

    // Connects and says nothing: the server waits for a ClientHello that never comes.
    let mut stalled = TcpStream::connect(server.addr).unwrap();
    stalled.set_read_timeout(Some(PATIENCE)).unwrap();
    let opened = Instant::now();

    let app = TlsClient::new(&certs.client_settings("app")).unwrap();
    let mut good = Connection::connect_with(&endpoint, None, Some(&app), PATIENCE).unwrap();
    assert_eq!(who(&mut good).unwrap(), "app");

    let mut byte = [0u8; 1];
    let read = stalled.read(&mut byte);
    let waited = opened.elapsed();
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "the stalled connection got {read:?}"
    );
    assert!(
        waited >= FRAME_TIMEOUT && waited < PATIENCE,
        "closed after {waited:?}"
    );
    assert_eq!(who(&mut good).unwrap(), "app", "still served");
}
