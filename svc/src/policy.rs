//! Keeping a process's copy of the security policy current: a thread that asks the
//! nameservers for a newer policy every `security.policy_refresh_ms` and installs it
//! (docs/ARCHITECTURE.md §9). Used by the processes other than the nameserver that run on
//! threads or tokio (GSL, SGS, proxy); the broker's shard 0 does the same on its executor.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use auth::{Authority, Policy};
use log::{info, warn};
use protocol::codes::Command;
use protocol::control::{self, PolicyDocument, PolicyGet};

use crate::rpc::{Connection, TlsClient};

/// Longest wait for a nameserver's answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the policy comes from and with which credentials.
#[derive(Clone, Debug)]
pub struct PolicySource {
    /// Nameservers, `host:port`, tried in order.
    pub nameservers: Vec<String>,
    /// This process's token.
    pub token: Option<String>,
    /// TLS to the nameservers, when this process has `[tls]`.
    pub tls: Option<TlsClient>,
    /// How often to ask.
    pub refresh: Duration,
}

/// The refreshing thread; stops (and is joined) when dropped.
#[derive(Debug)]
pub struct PolicyFollower {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PolicyFollower {
    /// Fetches the policy once now (so a process starts with it when a nameserver answers),
    /// then keeps `authority` current on a thread. Does nothing when security is off.
    pub fn start(authority: &Authority, source: PolicySource) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        if !authority.is_enabled() {
            return Self { stop, thread: None };
        }
        let mut connections: Vec<Option<Connection>> =
            source.nameservers.iter().map(|_| None).collect();
        let mut failing = !refresh(authority, &source, &mut connections);
        if failing {
            warn!(
                "no security policy from the nameservers ({}) yet: every caller is refused \
                 until one answers",
                source.nameservers.join(", ")
            );
        }
        let thread = {
            let (authority, stop) = (authority.clone(), stop.clone());
            std::thread::Builder::new()
                .name("defibus-policy".into())
                .spawn(move || {
                    while !sleep_unless_stopped(&stop, source.refresh) {
                        let fetched = refresh(&authority, &source, &mut connections);
                        if fetched && failing {
                            info!("security policy version {} fetched", authority.version());
                        }
                        failing = !fetched;
                    }
                })
                .map_err(|e| warn!("cannot start the policy thread: {e}"))
                .ok()
        };
        Self { stop, thread }
    }
}

impl Drop for PolicyFollower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// Sleeps `period` (woken early by `Drop`'s unpark); true once stopped.
fn sleep_unless_stopped(stop: &AtomicBool, period: Duration) -> bool {
    let until = std::time::Instant::now() + period;
    loop {
        if stop.load(Ordering::Acquire) {
            return true;
        }
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        std::thread::park_timeout(left);
    }
}

/// One round: the first nameserver that answers; true when one did.
fn refresh(
    authority: &Authority,
    source: &PolicySource,
    connections: &mut [Option<Connection>],
) -> bool {
    for (nameserver, connection) in source.nameservers.iter().zip(connections) {
        match fetch(authority, nameserver, source, connection) {
            Ok(Some(policy)) => {
                authority.install(policy);
                return true;
            }
            Ok(None) => return true,
            Err(e) => {
                *connection = None;
                log::debug!("policy from {nameserver}: {e}");
            }
        }
    }
    false
}

fn fetch(
    authority: &Authority,
    nameserver: &str,
    source: &PolicySource,
    connection: &mut Option<Connection>,
) -> Result<Option<Policy>, String> {
    if connection.is_none() {
        let token = source.token.as_deref();
        let connected =
            Connection::connect_with(nameserver, token, source.tls.as_ref(), CALL_TIMEOUT);
        *connection = Some(connected.map_err(|e| crate::server::Chain(&e).to_string())?);
    }
    let Some(conn) = connection.as_mut() else {
        unreachable!("connected above")
    };
    let request = PolicyGet {
        known_version: authority.version(),
    };
    let body = control::encode(&request).map_err(|e| e.to_string())?;
    let frame = conn
        .call(Command::PolicyGet, &body, CALL_TIMEOUT)
        .map_err(|e| e.to_string())?;
    let document: PolicyDocument = control::decode(&frame.body).map_err(|e| e.to_string())?;
    if document.json.is_empty() {
        return Ok(None);
    }
    Policy::from_json(&document.json)
        .map(Some)
        .map_err(|e| format!("{nameserver}: {e}"))
}
