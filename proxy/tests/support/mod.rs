//! A bus (nameserver + one broker, in-process on port 0) with a proxy in front of it, a
//! small blocking HTTP client, a WebSocket client and a webhook receiver for the scenarios.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use defibus_tests::{Cluster, WAIT};
use protocol::control::FlushMode;
use proxy::{ProxyConfig, ProxyHandle};
use tungstenite::stream::MaybeTlsStream;

pub struct Bus {
    /// `None` only inside [`Bus::restart_proxy`].
    proxy: Option<ProxyHandle>,
    pub cluster: Cluster,
    pub config: ProxyConfig,
    /// The proxy's data directory, kept across restarts.
    pub data: tempfile::TempDir,
}

impl Bus {
    /// A one-broker, one-shard cluster with `topics` created, and a proxy on port 0 with its
    /// own data directory.
    pub fn start(topics: &[&str], adjust: impl FnOnce(&mut ProxyConfig)) -> Self {
        Self::start_on(Cluster::start(1, 1), topics, adjust)
    }

    /// Like [`Bus::start`], on a cluster the caller started (brokers configured its way).
    pub fn start_on(
        cluster: Cluster,
        topics: &[&str],
        adjust: impl FnOnce(&mut ProxyConfig),
    ) -> Self {
        for topic in topics {
            cluster.create_topic(topic, 2, FlushMode::Async);
        }
        let data = tempfile::tempdir().unwrap();
        let mut config = ProxyConfig {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            nameservers: vec![cluster.nameserver.local_addr().to_string()],
            data_dir: data.path().to_owned(),
            ..ProxyConfig::default()
        };
        adjust(&mut config);
        let proxy = proxy::start(config.clone()).expect("proxy starts");
        Self {
            proxy: Some(proxy),
            cluster,
            config,
            data,
        }
    }

    /// Stops the proxy cleanly; [`Bus::start_proxy`] starts it again.
    pub fn stop_proxy(&mut self) {
        if let Some(old) = self.proxy.take() {
            old.shutdown().expect("the proxy stops cleanly");
        }
    }

    /// Starts a proxy (on a new port) on the same data directory.
    pub fn start_proxy(&mut self) {
        let fresh = ProxyConfig {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            ..self.config.clone()
        };
        self.proxy = Some(proxy::start(fresh).expect("proxy restarts"));
    }

    pub fn proxy(&self) -> &ProxyHandle {
        self.proxy.as_ref().expect("a running proxy")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy().local_addr())
    }

    /// A WebSocket session, hello sent and welcome read.
    pub fn stream(&self, instance: &str) -> Stream {
        let url = format!("ws://{}/v1/stream", self.proxy().local_addr());
        let (socket, _) = tungstenite::connect(url).expect("WebSocket connects");
        if let MaybeTlsStream::Plain(tcp) = socket.get_ref() {
            tcp.set_read_timeout(Some(WAIT)).unwrap();
        }
        let mut stream = Stream { socket };
        stream.send(serde_json::json!({"type": "hello", "identity": identity(instance)}));
        let welcome = stream.recv();
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        stream
    }

    /// POSTs `body` (raw text) and returns (status, parsed JSON body or Null).
    pub fn post(&self, path: &str, body: &str) -> (u16, serde_json::Value) {
        answer(
            agent()
                .post(&self.url(path))
                .set("content-type", "application/json")
                .send_string(body),
        )
    }

    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        answer(agent().get(&self.url(path)).call())
    }

    pub fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        answer(agent().delete(&self.url(path)).call())
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(WAIT).build()
}

fn answer(result: Result<ureq::Response, ureq::Error>) -> (u16, serde_json::Value) {
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(e) => panic!("HTTP call failed: {e}"),
    };
    let status = response.status();
    let text = response.into_string().unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    (status, json)
}

pub fn identity(instance: &str) -> serde_json::Value {
    serde_json::json!({"system": "it", "area": "A10", "group": "g", "instance": instance})
}

pub const SHORT: Duration = Duration::from_millis(300);

/// A WebSocket session of the scenarios, over plain TCP by default (or TLS, see
/// [`Stream::over`]).
pub struct Stream<S: Read + Write = MaybeTlsStream<TcpStream>> {
    socket: tungstenite::WebSocket<S>,
}

impl Stream {
    /// A session over an already upgraded socket (read timeout [`WAIT`]).
    pub fn from_socket(socket: tungstenite::WebSocket<MaybeTlsStream<TcpStream>>) -> Self {
        if let MaybeTlsStream::Plain(tcp) = socket.get_ref() {
            tcp.set_read_timeout(Some(WAIT)).unwrap();
        }
        Self { socket }
    }
}

impl<S: Read + Write> Stream<S> {
    /// A session over an already upgraded socket whose reads time out by themselves.
    pub fn over(socket: tungstenite::WebSocket<S>) -> Self {
        Self { socket }
    }

    pub fn send(&mut self, frame: serde_json::Value) {
        self.socket
            .send(tungstenite::Message::text(frame.to_string()))
            .expect("WebSocket send");
    }

    /// The next JSON frame (pings skipped); panics after [`WAIT`].
    pub fn recv(&mut self) -> serde_json::Value {
        loop {
            match self.socket.read().expect("WebSocket read") {
                tungstenite::Message::Text(text) => {
                    return serde_json::from_str(text.as_str()).expect("JSON frame");
                }
                tungstenite::Message::Close(close) => panic!("session closed: {close:?}"),
                _ => continue,
            }
        }
    }

    /// The next frame whose `type` is `kind`, skipping others.
    pub fn recv_type(&mut self, kind: &str) -> serde_json::Value {
        loop {
            let frame = self.recv();
            if frame["type"] == kind {
                return frame;
            }
        }
    }
}

/// What a webhook receiver answers to one push.
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn ok() -> Self {
        Self {
            status: 200,
            body: String::new(),
        }
    }
}

/// A webhook receiver: `answer` decides each answer from the push's JSON; every push it
/// answered with a 2xx is sent on the channel.
pub fn webhook_server_with(
    answer: impl FnMut(&serde_json::Value) -> Answer + Send + 'static,
) -> (String, mpsc::Receiver<serde_json::Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    let mut answer = answer;
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let Answer { status, body } = answer(&json);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            if (200..300).contains(&status) && tx.send(json).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

/// A webhook receiver answering the first `fail_first` pushes with 500, then 200.
pub fn webhook_server(fail_first: usize) -> (String, mpsc::Receiver<serde_json::Value>) {
    let mut seen = 0;
    webhook_server_with(move |_| {
        seen += 1;
        if seen <= fail_first {
            Answer {
                status: 500,
                body: String::new(),
            }
        } else {
            Answer::ok()
        }
    })
}

/// One HTTP/1.1 exchange on an open connection: writes `request` (whole, headers and body)
/// and reads one response. Returns (status, body); an error when the connection was closed or
/// reset before a whole response (a connection the proxy refused).
pub fn exchange(stream: &mut TcpStream, request: &str) -> std::io::Result<(u16, String)> {
    stream.set_read_timeout(Some(WAIT))?;
    exchange_on(stream, request)
}

/// [`exchange`] on any stream (TLS over TCP, say) whose reads time out by themselves.
pub fn exchange_on(
    stream: &mut (impl Read + Write),
    request: &str,
) -> std::io::Result<(u16, String)> {
    stream.write_all(request.as_bytes())?;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(head_end) = find(&buffer, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
            let length = head
                .lines()
                .find_map(|l| {
                    let lower = l.to_ascii_lowercase();
                    lower
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if buffer.len() >= head_end + 4 + length {
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let body = String::from_utf8_lossy(&buffer[head_end + 4..head_end + 4 + length]);
                return Ok((status, body.to_string()));
            }
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before a whole response",
            ));
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A `POST` request with a JSON body, as raw HTTP/1.1.
pub fn post_request(path: &str, body: &str, close: bool) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{}\r\n{body}",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
}

/// A connection to `to` from the loopback address `from` (e.g. 127.0.0.2): another peer
/// address on the same host.
pub fn connect_from(from: &str, to: std::net::SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let local: std::net::SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    socket.into()
}
