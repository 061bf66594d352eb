//! The broker's side of security (`docs/ARCHITECTURE.md` §9): the policy every shard
//! checks connections against, and the broker's own token for the connections it opens
//! (to nameservers, and to leaders as a follower).
//!
//! One [`Security`] is made by [`crate::Broker::start`] and shared by every shard: the
//! [`Authority`] inside is built for that (an atomic version and a lock taken only when the
//! policy changes), and each connection keeps its own cache of allowed verdicts
//! (`auth::authority::Verdicts`), so a produce costs one relaxed atomic load more.

use std::rc::Rc;
use std::time::Duration;

use auth::{Authority, Policy};
use protocol::codes::Command;
use protocol::control::{self, PolicyDocument, PolicyGet};

use crate::peer::{Credentials, Peer};
use crate::shard::Shard;

/// Longest wait to connect to, or hear back from, a nameserver for the policy.
const POLICY_TIMEOUT: Duration = Duration::from_secs(2);

/// The policy and the broker's credentials.
#[derive(Debug)]
pub(crate) struct Security {
    authority: Authority,
    token: Option<String>,
}

impl Security {
    pub(crate) fn new(authority: Authority, token: Option<String>) -> Self {
        Self { authority, token }
    }

    /// The policy connections are checked against.
    pub(crate) fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The broker's own token, presented on the connections it opens; `None` without one.
    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// True when connections must authenticate.
    pub(crate) fn is_enabled(&self) -> bool {
        self.authority.is_enabled()
    }
}

/// Shard 0: asks the nameservers for a newer policy every `security.policy_refresh_ms`, and
/// installs it for every shard; runs until dropped. The first policy is what the accept loops
/// wait for (see [`wait_for_policy`]). A nameserver that fails is skipped for the next one;
/// failures are logged when they start and when they end.
pub(crate) async fn refresh(shard: Rc<Shard>) {
    let security = &shard.security;
    let interval = Duration::from_millis(shard.config.security.policy_refresh_ms);
    let sources = shard
        .config
        .security
        .policy_sources(&shard.config.nameservers);
    let mut peers: Vec<Option<Peer>> = sources.iter().map(|_| None).collect();
    let mut failing = false;
    loop {
        let mut fetched = false;
        for (address, peer) in sources.iter().zip(&mut peers) {
            match fetch(&shard, address, peer).await {
                Ok(policy) => {
                    if let Some(policy) = policy {
                        security.authority().install(policy);
                    }
                    fetched = true;
                    break;
                }
                Err(e) => {
                    *peer = None;
                    if !failing {
                        log::warn!("cannot fetch the security policy: {e}");
                    }
                }
            }
        }
        if fetched && failing {
            log::info!(
                "security policy fetched again (version {})",
                security.authority().version()
            );
        }
        failing = !fetched;
        crate::rt::sleep(interval).await;
    }
}

/// One `PolicyGet` to the nameserver at `address`: the policy when newer than the one held.
async fn fetch(
    shard: &Shard,
    address: &str,
    peer: &mut Option<Peer>,
) -> Result<Option<Policy>, String> {
    let security = &shard.security;
    if peer.is_none() {
        let limits = shard.config.frame_limits();
        let connected = Peer::connect(address, POLICY_TIMEOUT, limits, Credentials::of(shard))
            .await
            .map_err(|e| e.to_string())?;
        *peer = Some(connected);
    }
    let Some(connection) = peer.as_mut() else {
        unreachable!("connected above")
    };
    let request = PolicyGet {
        known_version: security.authority().version(),
    };
    let body = control::encode(&request).map_err(|e| e.to_string())?;
    let frame = connection
        .call(Command::PolicyGet, &body)
        .await
        .map_err(|e| e.to_string())?;
    let document: PolicyDocument = control::decode(&frame.body).map_err(|e| e.to_string())?;
    if document.json.is_empty() {
        return Ok(None);
    }
    Policy::from_json(&document.json)
        .map(Some)
        .map_err(|e| format!("{address}: {e}"))
}

/// Waits until the broker holds a policy (security on): until then no token can be checked,
/// so connections wait in the listen backlog rather than being refused. Logs while waiting.
pub(crate) async fn wait_for_policy(shard: &Shard) {
    let authority = shard.security.authority();
    if !authority.is_enabled() || authority.version() > 0 {
        return;
    }
    if shard.id == 0 {
        log::info!(
            "waiting for the security policy from the nameservers ({}) before accepting \
             connections",
            shard.config.nameservers.join(", ")
        );
    }
    // Another shard's thread installs it; a short poll is the simplest cross-thread wait at
    // start-up, the only time this runs.
    while authority.version() == 0 {
        crate::rt::sleep(Duration::from_millis(10)).await;
    }
}
