//! Registration with the nameservers, from shard 0.
//!
//! Every `register_interval_ms` shard 0 sends a `BrokerRegistration` (id, cluster, area,
//! address, shard ports, topics with queue counts and depths) to every configured nameserver,
//! over one kept-open connection each. A nameserver that is down is retried at the next
//! interval; its outage is logged once at warn, its recovery at info. At a clean shutdown the
//! broker sends `BrokerUnregister` to those that are reachable.
//!
//! Between registrations, shard 0 also sends each nameserver a small `BrokerHeartbeat` every
//! `controller_heartbeat_interval_ms`, for the replication controller's failure detector.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use protocol::codes::Command;
use protocol::control::{self, BrokerId, BrokerRegistration};
use protocol::frame::FrameLimits;

use crate::notify::Notify;
use crate::peer::{Credentials, Peer, PeerError};
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
    /// Asks for a round now rather than at the interval, without waiting for it (shard 0).
    pub fn request(&self) {
        self.requested.notify();
    }

    /// Rounds have stopped (the shard is closing): nobody waits for one any more.
    pub fn stop(&self) {
        self.stopped.set(true);
        self.completed.notify();
    }
}

/// One nameserver as shard 0 tracks it.
struct Nameserver {
    address: String,
    /// The connection, made on the first call and again after a failure.
    peer: Option<Peer>,
    down: bool,
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
            peer: None,
            down: false,
        })
        .collect();
    let interval = Duration::from_millis(shard.config.register_interval_ms);
    ports_published(&shard).await;
    loop {
        // Taken before the round: a request made during it starts the next one at once.
        let rounds = &shard.registration;
        let requested = rounds.requested.generation();
        let registration = registration(&shard).await;
        match control::encode(&registration) {
            Ok(body) => {
                for ns in &mut nameservers {
                    let limits = shard.config.frame_limits();
                    let result = call(
                        ns,
                        limits,
                        Credentials::of(&shard),
                        Command::BrokerRegister,
                        &body,
                    )
                    .await;
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

/// Sends `BrokerHeartbeat` to the nameserver at `address` every
/// `controller_heartbeat_interval_ms` until dropped: the replication controller's failure
/// detector listens to these rather than to the (larger, rarer) registrations. Each
/// nameserver gets its own task and connection, so a heartbeat never waits behind a
/// registration, nor behind another nameserver that does not answer. Outages are the
/// registration task's to report; here they are only retried.
pub(crate) async fn heartbeat(shard: Rc<Shard>, address: String) {
    let interval = Duration::from_millis(shard.config.controller_heartbeat_interval_ms);
    let Some(body) = broker_id_body(&shard) else {
        return;
    };
    ports_published(&shard).await;
    let mut ns = Nameserver {
        address,
        peer: None,
        down: false,
    };
    loop {
        let limits = shard.config.frame_limits();
        if let Err(e) = call(
            &mut ns,
            limits,
            Credentials::of(&shard),
            Command::BrokerHeartbeat,
            &body,
        )
        .await
        {
            ns.peer = None;
            log::debug!("heartbeat not delivered: {e}");
        }
        crate::rt::sleep(interval).await;
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
    let Some(body) = broker_id_body(shard) else {
        return;
    };
    for address in &shard.config.nameservers {
        let mut ns = Nameserver {
            address: address.clone(),
            peer: None,
            down: false,
        };
        let limits = shard.config.frame_limits();
        match call(
            &mut ns,
            limits,
            Credentials::of(shard),
            Command::BrokerUnregister,
            &body,
        )
        .await
        {
            Ok(()) => log::info!("unregistered from nameserver {address}"),
            // The error names the nameserver.
            Err(e) => log::info!("could not unregister: {e}"),
        }
    }
}

/// The body of `BrokerUnregister` and `BrokerHeartbeat`: this broker's id.
fn broker_id_body(shard: &Shard) -> Option<Vec<u8>> {
    control::encode(&BrokerId {
        broker_id: shard.config.broker_id.clone(),
    })
    .inspect_err(|e| log::error!("cannot encode the broker id: {e}"))
    .ok()
}

/// Waits until every shard listens: the broker publishes their ports then, and registrations
/// and heartbeats name them.
async fn ports_published(shard: &Shard) {
    while shard.ports().is_empty() {
        crate::rt::sleep(Duration::from_millis(5)).await;
    }
}

fn track(ns: &mut Nameserver, result: Result<(), PeerError>) {
    match result {
        Ok(()) if ns.down => {
            ns.down = false;
            log::info!("nameserver {} is reachable again; registered", ns.address);
        }
        Ok(()) => {}
        Err(e) => {
            // Whatever the connection holds now (half an answer, a late one) is dropped.
            ns.peer = None;
            if !ns.down {
                ns.down = true;
                // The error names the nameserver.
                log::warn!("nameserver unreachable: {e}; retrying every interval");
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
async fn call(
    ns: &mut Nameserver,
    limits: FrameLimits,
    credentials: Credentials<'_>,
    command: Command,
    body: &[u8],
) -> Result<(), PeerError> {
    if ns.peer.is_none() {
        ns.peer = Some(Peer::connect(&ns.address, NAMESERVER_TIMEOUT, limits, credentials).await?);
    }
    let Some(peer) = ns.peer.as_mut() else {
        unreachable!("connected above")
    };
    peer.call(command, body).await.map(drop)
}
