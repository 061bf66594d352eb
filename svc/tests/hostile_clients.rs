//! Hostile clients against the shared frame server, over real TCP on loopback: each attack
//! is held to its bound (time, memory, connections) while a normal client is served.

use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use protocol::codes::{Command, Status};
use protocol::frame::{FrameBytes, FrameLimits, FrameMeta, Framer, HEADER_LEN, encode_frame};
use svc::admission::Admission;
use svc::connection::{Answer, Handler};
use svc::limits::Limits;
use testkit::wait_until;
use tokio::sync::{oneshot, watch};

/// How long a test waits for anything before failing: generous, since CI machines stall.
const PATIENCE: Duration = Duration::from_secs(10);
/// The frame deadline of the tests that want it to pass.
const FRAME_TIMEOUT: Duration = Duration::from_millis(300);
const FRAME_LEN_MAX: usize = 1 << 20;

/// Answers every request with its body's length.
struct Echo {
    framer: Framer,
}

impl Handler for Echo {
    const NAME: &'static str = "echo";

    fn framer(&self) -> &Framer {
        &self.framer
    }

    fn idle_timeout(&self) -> Duration {
        // Far past every test: only the frame deadline may close a connection.
        Duration::from_secs(600)
    }

    fn handle(
        self: &Arc<Self>,
        _caller: &svc::connection::Caller,
        _command: Command,
        body: &[u8],
    ) -> impl Future<Output = Answer> + Send {
        std::future::ready(Answer::ok((body.len() as u64).to_le_bytes().to_vec()))
    }
}

/// A server on its own thread, stopped when dropped.
struct Server {
    addr: SocketAddr,
    admission: Arc<Admission>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(limits: Limits) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let admission = Arc::new(Admission::new(Echo::NAME, limits));
        let (stop, stopped) = oneshot::channel::<()>();
        let served = Arc::clone(&admission);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let handler = Arc::new(Echo {
                    framer: Framer::new(svc::config::frame_limits(FRAME_LEN_MAX)),
                });
                let (stop_tx, _) = watch::channel(false);
                svc::server::serve_with(listener, addr, handler, served, stop_tx, async {
                    let _ = stopped.await;
                })
                .await;
            });
        });
        Self {
            addr,
            admission,
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

fn limits(frame_timeout: Duration, partial_frame_bytes_max: usize) -> Limits {
    Limits {
        frame_timeout,
        partial_frame_bytes_max,
        ..Limits::new(64)
    }
}

/// A request frame of `body_len` bytes.
fn request(request_id: u64, body_len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let meta = FrameMeta::request(Command::ClusterInfo, request_id);
    encode_frame(&meta, &[], &vec![7; body_len], &mut out).unwrap();
    out
}

struct Client {
    stream: TcpStream,
    buf: BytesMut,
    framer: Framer,
}

impl Client {
    fn connect(addr: SocketAddr) -> Self {
        Self::from_stream(TcpStream::connect(addr).unwrap())
    }

    fn from_stream(stream: TcpStream) -> Self {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        Self {
            stream,
            buf: BytesMut::new(),
            framer: Framer::new(FrameLimits::default()),
        }
    }

    /// The next frame, or `None` once the server closed the connection.
    fn read_frame(&mut self) -> Option<FrameBytes> {
        loop {
            if let Some(frame) = self.framer.split_frame(&mut self.buf).unwrap() {
                return Some(frame);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("reading from the server: {e}"),
            }
        }
    }

    /// Sends a request of `body_len` bytes and checks its answer.
    fn call(&mut self, request_id: u64, body_len: usize) {
        self.stream
            .write_all(&request(request_id, body_len))
            .unwrap();
        self.expect_answer(request_id, body_len);
    }

    fn expect_answer(&mut self, request_id: u64, body_len: usize) {
        let frame = self.read_frame().expect("an answer");
        assert_eq!(frame.header.request_id, request_id);
        assert_eq!(frame.header.status(), Ok(Status::Ok));
        assert_eq!(frame.body[..], (body_len as u64).to_le_bytes());
    }

    /// The server's last word: an error answer with `status` (if any), then the close.
    fn expect_closed_with(&mut self, status: Option<Status>) {
        if let Some(status) = status {
            let frame = self.read_frame().expect("an error answer before the close");
            assert_eq!(frame.header.status(), Ok(status));
        }
        assert!(self.read_frame().is_none(), "closed after its last answer");
    }

    /// Nothing has been answered yet (a check that the server holds the request).
    fn nothing_answered(&mut self) -> bool {
        self.stream.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        let quiet =
            matches!(self.stream.peek(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock);
        self.stream.set_nonblocking(false).unwrap();
        quiet
    }
}

#[test]
fn a_slowloris_is_closed_at_its_frame_deadline_while_others_are_served() {
    let server = Server::start(limits(FRAME_TIMEOUT, 64 << 20));
    let mut normal = Client::connect(server.addr);
    normal.call(1, 10);

    // A frame sent a byte every 20 ms: each read resets the idle timeout, never the deadline.
    let mut slow = Client::connect(server.addr);
    let frame = request(9, 1_000);
    let mut writer = slow.stream.try_clone().unwrap();
    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let trickling = Arc::clone(&done);
    let trickle = std::thread::spawn(move || {
        for byte in frame {
            if trickling.load(Ordering::Relaxed) || writer.write_all(&[byte]).is_err() {
                return;
            }
            // The attack's pace, not a synchronisation.
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    for id in 2..20 {
        normal.call(id, 100);
    }
    slow.expect_closed_with(Some(Status::RequestExpired));
    let held = started.elapsed();
    done.store(true, Ordering::Relaxed);
    trickle.join().unwrap();
    assert!(
        held >= FRAME_TIMEOUT && held < FRAME_TIMEOUT + Duration::from_secs(3),
        "closed {held:?} after its first byte, deadline {FRAME_TIMEOUT:?}"
    );
    normal.call(30, 10);
}

#[test]
fn a_connection_that_sends_nothing_is_closed_at_the_first_frame_deadline() {
    let server = Server::start(limits(FRAME_TIMEOUT, 64 << 20));
    let started = Instant::now();
    let mut silent = Client::connect(server.addr);
    silent.expect_closed_with(None);
    assert!(started.elapsed() < FRAME_TIMEOUT + Duration::from_secs(3));
    // A served connection idles between frames under the idle timeout only.
    let mut normal = Client::connect(server.addr);
    normal.call(1, 10);
    let idle_from = Instant::now();
    wait_until("twice the frame deadline to pass", PATIENCE, || {
        idle_from.elapsed() > 2 * FRAME_TIMEOUT
    });
    normal.call(2, 10);
}

#[test]
fn large_partial_frames_beyond_the_budget_wait_unbuffered_while_others_are_served() {
    const BIG: usize = 600 << 10;
    let server = Server::start(limits(PATIENCE, 1 << 20));
    let admission = &server.admission;
    let mut normal = Client::connect(server.addr);

    // The first large frame reserves its length once its header is in.
    let first_frame = request(1, BIG);
    let mut first = Client::connect(server.addr);
    first.stream.write_all(&first_frame[..BIG / 2]).unwrap();
    wait_until("the first frame's reservation", PATIENCE, || {
        admission.partial_frame_bytes() == first_frame.len()
    });

    // The second does not fit the rest of the budget: it waits, its bytes left unread.
    let second_frame = request(2, BIG);
    let mut second = Client::connect(server.addr);
    second.stream.write_all(&second_frame).unwrap();
    wait_until("the second frame to wait for the budget", PATIENCE, || {
        admission.partial_frame_waiters() == 1
    });
    assert_eq!(admission.partial_frame_bytes(), first_frame.len());
    normal.call(10, 100);
    normal.call(11, 60 << 10);
    assert!(second.nothing_answered(), "answered past the budget");

    // Once the first completes, its reservation passes to the second.
    first.stream.write_all(&first_frame[BIG / 2..]).unwrap();
    first.expect_answer(1, BIG);
    second.expect_answer(2, BIG);
    wait_until("every reservation returned", PATIENCE, || {
        admission.partial_frame_bytes() == 0 && admission.partial_frame_waiters() == 0
    });
    normal.call(12, 10);
}

#[test]
fn a_frame_waiting_for_the_budget_is_closed_at_its_deadline() {
    const BIG: usize = 600 << 10;
    let server = Server::start(limits(FRAME_TIMEOUT, 1 << 20));
    let admission = &server.admission;
    let mut holder = Client::connect(server.addr);
    holder
        .stream
        .write_all(&request(1, BIG)[..HEADER_LEN])
        .unwrap();
    let mut waiter = Client::connect(server.addr);
    waiter
        .stream
        .write_all(&request(2, BIG)[..HEADER_LEN])
        .unwrap();
    // The waiter is closed at its deadline: still waiting (`SystemBusy`), or, when the
    // holder's earlier deadline freed the budget just before, reading (`RequestExpired`).
    let started = Instant::now();
    let last_word = waiter
        .read_frame()
        .expect("an error answer before the close");
    assert!(
        matches!(
            last_word.header.status(),
            Ok(Status::SystemBusy | Status::RequestExpired)
        ),
        "{:?}",
        last_word.header
    );
    waiter.expect_closed_with(None);
    assert!(started.elapsed() < FRAME_TIMEOUT + Duration::from_secs(3));
    holder.expect_closed_with(Some(Status::RequestExpired));
    wait_until("the reservation returned on close", PATIENCE, || {
        admission.partial_frame_bytes() == 0
    });
    Client::connect(server.addr).call(3, BIG);
}

#[test]
fn one_address_is_capped_and_other_addresses_still_connect() {
    let server = Server::start(Limits {
        connections_per_ip_max: 3,
        ..limits(PATIENCE, 64 << 20)
    });
    let local = "127.0.0.1".parse().unwrap();
    let mut greedy: Vec<Client> = (0..3).map(|_| Client::connect(server.addr)).collect();
    for (id, client) in (1..).zip(&mut greedy) {
        client.call(id, 10);
    }
    assert_eq!(server.admission.connections_from(local), 3);
    let mut refused = Client::connect(server.addr);
    refused.expect_closed_with(None);

    // Another address is let in, and the capped one again once it closes a connection.
    let mut other = Client::from_stream(connect_from("127.0.0.2", server.addr));
    other.call(10, 10);
    drop(greedy.pop());
    wait_until("a greedy connection to close", PATIENCE, || {
        server.admission.connections_from(local) == 2
    });
    Client::connect(server.addr).call(11, 10);
}

/// A connection from source address `ip` (any loopback address is local on Linux).
fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(ip.parse().unwrap(), 0))
            .unwrap();
        let stream = socket.connect(to).await.unwrap();
        let stream = stream.into_std().unwrap();
        stream.set_nonblocking(false).unwrap();
        stream
    })
}
