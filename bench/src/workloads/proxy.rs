//! The proxy beside the native client, in one run: an embedded proxy (the `defibus-proxy`
//! library, its own runtime) in front of the cluster under test, and the same loads sent
//! natively and through it.
//!
//! - publish throughput: native producers; HTTP batch publishes, HTTP single publishes
//!   (keep-alive, one connection per thread, closed loop); WebSocket publishes pipelined
//!   up to `--ws-in-flight` per session. Same payload size and concurrency everywhere.
//! - request-reply round trips, closed loop, against one native echo responder: native
//!   requester, WebSocket `request` frames, HTTP `POST /v1/request`.
//!
//! Each proxy figure is reported as "ours" with the native figure as its baseline, so the
//! ratio column reads proxy / native. Payloads are ASCII, so they travel as JSON text
//! (`value`), the proxy's common case.
//!
//! The flags live here rather than in `cli.rs`, so this workload is one file plus its
//! wiring.

use std::net::TcpStream;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use client::{Message, Producer, Requester, Responder};
use tungstenite::stream::MaybeTlsStream;

use crate::cli::{DURATION_DEFAULT, Flush, GlobalArgs, parse_duration};
use crate::measure::{self, Shared};
use crate::report::{Baseline, Comparison, Measured};
use crate::target::Target;
use crate::workloads::produce;

/// Timeout of one HTTP call or WebSocket answer: a failure, not a latency, past it.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Batch linger of the native producers: the `produce` workload's default.
const NATIVE_LINGER: Duration = Duration::from_millis(1);
/// The echo responder's group.
const RESPONDER_GROUP: &str = "bench-proxy-echo";

#[derive(Args, Debug, Clone)]
pub struct ProxyArgs {
    /// Payload bytes of every message, published or requested (ASCII text).
    #[arg(long, default_value_t = 1024)]
    pub message_bytes: usize,
    /// Payload bytes of each request-reply round trip.
    #[arg(long, default_value_t = 256)]
    pub rr_message_bytes: usize,
    /// Concurrent publishers: native producers, HTTP connections, WebSocket sessions.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Messages per HTTP batch publish.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Publishes one WebSocket session has sent and not yet seen answered.
    #[arg(long, default_value_t = 64)]
    pub ws_in_flight: usize,
    /// Queues of the publish topic.
    #[arg(long, default_value_t = 4)]
    pub queues: u32,
    /// Measured time of each of the seven runs, after the warm-up.
    #[arg(long, default_value = DURATION_DEFAULT, value_parser = parse_duration)]
    pub duration: Duration,
}

pub fn run(
    target: &Target,
    global: &GlobalArgs,
    args: &ProxyArgs,
) -> anyhow::Result<Vec<Comparison>> {
    anyhow::ensure!(
        args.connections > 0 && args.batch > 0 && args.ws_in_flight > 0,
        "--connections, --batch and --ws-in-flight must be at least 1"
    );
    let nameservers = target.client(global, |c| c)?.config().nameservers.clone();
    let data = tempfile::Builder::new()
        .prefix("defibus-bench-proxy-")
        .tempdir()
        .context("creating the proxy's data directory")?;
    let proxy = proxy::start(proxy::ProxyConfig {
        listen_addr: "127.0.0.1:0".parse().expect("constant address"),
        nameservers,
        area: global.area.clone(),
        data_dir: data.path().to_owned(),
        ..proxy::ProxyConfig::default()
    })
    .context("starting the embedded proxy")?;
    let base = format!("http://{}", proxy.local_addr());
    let window = global.window(args.duration);
    let (n, size) = (args.connections, args.message_bytes);

    let topic = target.create_topic(global, "proxy-publish", args.queues, Flush::Async)?;
    let payload = "x".repeat(size);
    let batch_body = serde_json::json!({
        "messages": vec![serde_json::json!({"topic": topic, "value": payload}); args.batch],
    })
    .to_string();
    let single_body = serde_json::json!({"topic": topic, "value": payload}).to_string();
    let publish_url = format!("{base}/v1/publish");
    let (http_batch, _) = measure::run_window("proxy-http-batch", window, n, |_, shared| {
        http_loop(shared, &publish_url, &batch_body, args.batch, size)
    })?;
    let (http_single, _) = measure::run_window("proxy-http-single", window, n, |_, shared| {
        http_loop(shared, &publish_url, &single_body, 1, size)
    })?;
    let (ws_publish, _) = measure::run_window("proxy-ws-publish", window, n, |index, shared| {
        let session = ws_session(&base, &global.area, &format!("publisher-{index}"))?;
        ws_publish_loop(shared, session, &topic, &payload, args.ws_in_flight)
    })?;
    let request_reply = request_reply(target, global, args, &base)?;
    // The native publish run goes last: it writes gigabytes, and the page cache's writeback
    // of them would stall whatever ran after it.
    let native = native_produce(target, global, &topic, args)?;
    let native = Baseline {
        name: "native-produce".into(),
        setup: format!(
            "{n} native producer(s), callbacks, {size} B records, linger {NATIVE_LINGER:?}"
        ),
        measured: Measured::Throughput(native),
    };
    let publish = |workload: &str, setup: String, measured| Comparison {
        workload: workload.into(),
        setup,
        message_bytes: size,
        concurrency: n,
        ours: Measured::Throughput(measured),
        baseline: Some(native.clone()),
    };
    let mut comparisons = vec![
        publish(
            "proxy-http-batch",
            format!(
                "{n} keep-alive connection(s), POST /v1/publish of {} × {size} B, closed loop",
                args.batch
            ),
            http_batch,
        ),
        publish(
            "proxy-http-single",
            format!(
                "{n} keep-alive connection(s), POST /v1/publish of one {size} B message, closed loop"
            ),
            http_single,
        ),
        publish(
            "proxy-ws-publish",
            format!(
                "{n} WebSocket session(s), publish frames of {size} B, ≤ {} unanswered each",
                args.ws_in_flight
            ),
            ws_publish,
        ),
    ];
    comparisons.extend(request_reply);
    proxy.shutdown().context("stopping the embedded proxy")?;
    Ok(comparisons)
}

/// Native producers, each its own client, sending with callbacks as the produce workload
/// does, at its default batching (1 ms linger): the native client at its best.
fn native_produce(
    target: &Target,
    global: &GlobalArgs,
    topic: &str,
    args: &ProxyArgs,
) -> anyhow::Result<measure::Throughput> {
    let size = args.message_bytes;
    let (throughput, _) = measure::run_window(
        "native-produce",
        global.window(args.duration),
        args.connections,
        |_, shared| {
            let client = target.client(global, |c| c.with_batch_linger(NATIVE_LINGER))?;
            let producer = Producer::new(&client).context("starting a producer")?;
            produce::send_until_stopped(shared, &producer, topic, &vec![b'x'; size], None)?;
            client.close();
            Ok(())
        },
    )?;
    Ok(throughput)
}

/// POSTs `body` (carrying `messages` messages) in a closed loop on one keep-alive connection.
fn http_loop(
    shared: &Shared,
    url: &str,
    body: &str,
    messages: usize,
    size: usize,
) -> anyhow::Result<()> {
    let agent = ureq::AgentBuilder::new()
        .timeout(CALL_TIMEOUT)
        .max_idle_connections_per_host(1)
        .build();
    while !shared.stopped() {
        match agent
            .post(url)
            .set("content-type", "application/json")
            .send_string(body)
        {
            Ok(response) => {
                // Read the answer to the end, so the connection is reused.
                let _ = response.into_string();
                shared
                    .meter
                    .record(messages as u64, (messages * size) as u64);
            }
            Err(e) => {
                log::debug!("POST {url}: {e}");
                shared.meter.error();
            }
        }
    }
    Ok(())
}

type Socket = tungstenite::WebSocket<MaybeTlsStream<TcpStream>>;

/// A WebSocket session to the proxy, hello said.
fn ws_session(base: &str, area: &str, instance: &str) -> anyhow::Result<Socket> {
    let url = format!("{}/v1/stream", base.replacen("http", "ws", 1));
    let (mut socket, _) =
        tungstenite::connect(&url).with_context(|| format!("connecting {url}"))?;
    if let MaybeTlsStream::Plain(tcp) = socket.get_ref() {
        tcp.set_read_timeout(Some(CALL_TIMEOUT))?;
    }
    let hello = serde_json::json!({
        "type": "hello",
        "identity": {"system": "bench", "area": area, "group": "bench", "instance": instance},
    });
    socket.send(tungstenite::Message::text(hello.to_string()))?;
    let welcome = next_frame(&mut socket)?;
    anyhow::ensure!(
        welcome["type"] == "welcome",
        "hello answered with {welcome}"
    );
    Ok(socket)
}

/// The next JSON frame of a session.
fn next_frame(socket: &mut Socket) -> anyhow::Result<serde_json::Value> {
    loop {
        match socket.read().context("reading from the proxy")? {
            tungstenite::Message::Text(text) => return Ok(serde_json::from_str(text.as_str())?),
            tungstenite::Message::Close(close) => {
                anyhow::bail!("the proxy closed the session: {close:?}")
            }
            _ => continue,
        }
    }
}

/// Publishes on one session, keeping `in_flight` publishes unanswered.
fn ws_publish_loop(
    shared: &Shared,
    mut socket: Socket,
    topic: &str,
    payload: &str,
    in_flight: usize,
) -> anyhow::Result<()> {
    let frame =
        serde_json::json!({"type": "publish", "topic": topic, "value": payload}).to_string();
    let mut waiting = 0;
    while !shared.stopped() || waiting > 0 {
        while waiting < in_flight && !shared.stopped() {
            socket.write(tungstenite::Message::text(frame.clone()))?;
            waiting += 1;
        }
        socket.flush()?;
        let answer = next_frame(&mut socket)?;
        waiting -= 1;
        match answer["type"].as_str() {
            Some("published") => shared.meter.record(1, payload.len() as u64),
            _ => {
                log::debug!("publish answered {answer}");
                shared.meter.error();
            }
        }
    }
    let _ = socket.close(None);
    Ok(())
}

/// Native, WebSocket and HTTP round trips against one native echo responder.
fn request_reply(
    target: &Target,
    global: &GlobalArgs,
    args: &ProxyArgs,
    base: &str,
) -> anyhow::Result<Vec<Comparison>> {
    let topic = target.create_topic(global, "proxy-rr", 1, Flush::Async)?;
    let responder_client = target.client(global, |c| c)?;
    let responder = Responder::start(&responder_client, &topic, RESPONDER_GROUP, |r| {
        r.value.clone()
    })
    .context("starting the echo responder")?;
    let window = global.window(args.duration);
    let size = args.rr_message_bytes;
    let payload = "r".repeat(size);

    let native = measure::run_latency_window("native-rr", window, 1, |_, shared| {
        let client = target.client(global, |c| c)?;
        let requester = Requester::new(&client);
        let value = payload.as_bytes().to_vec();
        let histogram = measure::closed_loop(shared, size as u64, || {
            let reply =
                requester.request(Message::new(topic.as_str(), value.clone()), CALL_TIMEOUT)?;
            anyhow::ensure!(
                reply.value.len() == size,
                "a reply of {} B",
                reply.value.len()
            );
            Ok(())
        });
        client.close();
        histogram
    })?;
    let ws = measure::run_latency_window("proxy-ws-rr", window, 1, |_, shared| {
        let mut socket = ws_session(base, &global.area, "requester")?;
        let mut reference = 0u64;
        measure::closed_loop(shared, size as u64, || {
            reference += 1;
            let frame = serde_json::json!({
                "type": "request", "ref": reference, "topic": topic, "value": payload,
                "timeout_ms": CALL_TIMEOUT.as_millis() as u64,
            });
            socket.send(tungstenite::Message::text(frame.to_string()))?;
            let answer = next_frame(&mut socket)?;
            anyhow::ensure!(
                answer["type"] == "reply" && answer["ref"] == reference,
                "request answered {answer}"
            );
            Ok(())
        })
    })?;
    let request_url = format!("{base}/v1/request");
    let http = measure::run_latency_window("proxy-http-rr", window, 1, |_, shared| {
        let agent = ureq::AgentBuilder::new().timeout(CALL_TIMEOUT).build();
        let body = serde_json::json!({
            "topic": topic, "value": payload, "timeout_ms": CALL_TIMEOUT.as_millis() as u64,
        })
        .to_string();
        measure::closed_loop(shared, size as u64, || {
            let reply: serde_json::Value = agent
                .post(&request_url)
                .set("content-type", "application/json")
                .send_string(&body)?
                .into_json()?;
            anyhow::ensure!(
                reply["value"].as_str().map(str::len) == Some(size),
                "request answered {reply}"
            );
            Ok(())
        })
    })?;
    responder.close().context("closing the echo responder")?;
    responder_client.close();

    let baseline = Baseline {
        name: "native-rr".into(),
        setup: format!("1 native requester, {size} B echo, one request at a time"),
        measured: Measured::Latency(native),
    };
    let rr = |workload: &str, setup: &str, latency| Comparison {
        workload: workload.into(),
        setup: format!("1 {setup}, {size} B echo (native responder), one request at a time"),
        message_bytes: size,
        concurrency: 1,
        ours: Measured::Latency(latency),
        baseline: Some(baseline.clone()),
    };
    Ok(vec![
        rr(
            "proxy-ws-rr",
            "WebSocket session sending request frames",
            ws,
        ),
        rr(
            "proxy-http-rr",
            "keep-alive connection, POST /v1/request",
            http,
        ),
    ])
}
