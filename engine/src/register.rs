//! Registration with the nameservers, from shard 0.
//!
//! Every `register_interval_ms` shard 0 sends a `BrokerRegistration` (id, cluster, area,
//! address, shard ports, topics with queue counts and depths) to every configured nameserver,
//! over one kept-open connection each. A nameserver that is down is retried at the next
//! interval; its outage is logged once at warn, its recovery at info. At a clean shutdown the
//! broker sends `BrokerUnregister` to those that are reachable.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use protocol::codes::{Command, Status};
use protocol::control::{self, BrokerId, BrokerRegistration, ErrorReply};
use protocol::frame::{FrameBytes, FrameMeta, Framer, encode_frame};

use crate::notify::Notify;
use crate::rt::TcpStream;
use crate::shard::Shard;

/// Longest wait to connect to, or hear back from, a nameserver.
const NAMESERVER_TIMEOUT: Duration = Duration::from_secs(2);

/// Shard 0's registration rounds, as other tasks see them: a request for a round now, and
/// which request the last completed round was built after.
#[derive(Default)]
pub(crate) struct Registration {
    /// Notified to register now rather than at the interval.
    requested: Notify,
    /// Notified after every round, and when rounds stop (the shard is closing).
    completed: Notify,
    /// The `requested` generation the last completed round was built after.
    completed_up_to: Cell<u64>,
    /// No more rounds run.
    stopped: Cell<bool>,
}

impl Registration {
    /// Rounds have stopped (the shard is closing): nobody waits for one any more.
    pub fn stop(&self) {
        self.stopped.set(true);
        self.completed.notify();
    }
}

/// One nameserver as shard 0 tracks it.
struct Nameserver {
    address: String,
    stream: Option<TcpStream>,
    down: bool,
    request_id: u64,
}

/// Registers every interval until the task is dropped.
pub(crate) async fn run(shard: Rc<Shard>) {
    if shard.config.nameservers.is_empty() {
        log::info!("no nameservers configured; the broker does not register");
        return;
    }
    let mut nameservers: Vec<Nameserver> = shard
        .config
        .nameservers
        .iter()
        .map(|address| Nameserver {
            address: address.clone(),
            stream: None,
            down: false,
            request_id: 0,
        })
        .collect();
    let interval = Duration::from_millis(shard.config.register_interval_ms);
    // The broker publishes every shard's port once all listen; register only then.
    while shard.ports().is_empty() {
        crate::rt::sleep(Duration::from_millis(5)).await;
    }
    loop {
        // Taken before the round: a request made during it starts the next one at once.
        let rounds = &shard.registration;
        let requested = rounds.requested.generation();
        let registration = registration(&shard).await;
        match control::encode(&registration) {
            Ok(body) => {
                for ns in &mut nameservers {
                    let result = call(ns, Command::BrokerRegister, &body).await;
                    track(ns, result);
                }
            }
            Err(e) => log::error!("cannot encode the broker registration: {e}"),
        }
        rounds.completed_up_to.set(requested);
        rounds.completed.notify();
        futures_lite::future::or(crate::rt::sleep(interval), rounds.requested.wait(requested))
            .await;
    }
}

/// Registers now (shard 0) and returns once a registration built after this call was sent,
/// so the nameservers route what changed before anyone is told to refetch. Gives up after
/// two nameserver timeouts; without nameservers it returns at once.
pub(crate) async fn register_now(shard: &Shard) {
    if shard.config.nameservers.is_empty() {
        return;
    }
    let rounds = &shard.registration;
    rounds.requested.notify();
    let wanted = rounds.requested.generation();
    let registered = async {
        // A round in progress may have read the old state: wait for one built after now.
        while rounds.completed_up_to.get() < wanted && !rounds.stopped.get() {
            let seen = rounds.completed.generation();
            rounds.completed.wait(seen).await;
        }
    };
    if crate::rt::timeout(2 * NAMESERVER_TIMEOUT, registered)
        .await
        .is_none()
    {
        log::warn!("registration after a topic change did not complete in time");
    }
}

/// Tells every reachable nameserver the broker is leaving.
pub(crate) async fn unregister(shard: &Shard) {
    let body = match control::encode(&BrokerId {
        broker_id: shard.config.broker_id.clone(),
    }) {
        Ok(body) => body,
        Err(e) => {
            log::error!("cannot encode the broker id: {e}");
            return;
        }
    };
    for address in &shard.config.nameservers {
        let mut ns = Nameserver {
            address: address.clone(),
            stream: None,
            down: false,
            request_id: 0,
        };
        match call(&mut ns, Command::BrokerUnregister, &body).await {
            Ok(()) => log::info!("unregistered from nameserver {address}"),
            Err(e) => log::info!("could not unregister from nameserver {address}: {e}"),
        }
    }
}

fn track(ns: &mut Nameserver, result: Result<(), String>) {
    match result {
        Ok(()) if ns.down => {
            ns.down = false;
            log::info!("nameserver {} is reachable again; registered", ns.address);
        }
        Ok(()) => {}
        Err(e) => {
            ns.stream = None;
            if !ns.down {
                ns.down = true;
                log::warn!(
                    "nameserver {} unreachable: {e}; retrying every interval",
                    ns.address
                );
            }
        }
    }
}

/// What this broker registers: built fresh each interval from every shard's statistics.
async fn registration(shard: &Rc<Shard>) -> BrokerRegistration {
    let topics = crate::admin::topic_infos(shard).await;
    BrokerRegistration {
        broker_id: shard.config.broker_id.clone(),
        cluster: shard.config.cluster.clone(),
        area: shard.config.area.clone(),
        address: shard.config.advertised_address(),
        shard_ports: shard.ports(),
        topics,
    }
}

/// One request and its response on the nameserver's connection (connecting if needed).
async fn call(ns: &mut Nameserver, command: Command, body: &[u8]) -> Result<(), String> {
    if ns.stream.is_none() {
        let stream = TcpStream::connect_timeout(&ns.address, NAMESERVER_TIMEOUT)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(NAMESERVER_TIMEOUT))
            .map_err(|e| format!("set timeout: {e}"))?;
        ns.stream = Some(stream);
    }
    let Some(stream) = ns.stream.as_mut() else {
        return Err("not connected".into());
    };
    ns.request_id += 1;
    let mut out = Vec::new();
    encode_frame(
        &FrameMeta::request(command, ns.request_id),
        &[],
        body,
        &mut out,
    )
    .map_err(|e| format!("encode: {e}"))?;
    stream
        .write_all(&out)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let response = read_frame(stream).await?;
    match response.header.status() {
        Ok(Status::Ok) => Ok(()),
        _ => {
            let message = control::decode::<ErrorReply>(&response.body)
                .map(|e| e.message)
                .unwrap_or_default();
            Err(format!(
                "refused with status {}: {message}",
                response.header.status
            ))
        }
    }
}

async fn read_frame(stream: &mut TcpStream) -> Result<FrameBytes, String> {
    let framer = Framer::default();
    let mut buf = BytesMut::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(frame) = framer
            .split_frame(&mut buf)
            .map_err(|e| format!("bad response: {e}"))?
        {
            return Ok(frame);
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
