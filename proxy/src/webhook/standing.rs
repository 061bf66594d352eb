//! Whether a subscription's owner may still consume what the subscription pushes.
//!
//! A webhook subscription pushes with the proxy's own bus credentials, for as long as it
//! exists; the caller that created it was checked once, at `POST /v1/subscriptions`. Its
//! owner's `consume` grant is therefore checked again before every delivery: once the grant
//! is revoked, nothing more is posted (the messages stay uncommitted on the bus, so none is
//! lost); when it is granted again, or the subscription is removed, the wait ends. A check
//! costs one atomic load while the policy version is unchanged, and a change of verdict is
//! logged and audited once, not per message.

use std::sync::Mutex;
use std::sync::PoisonError;

use auth::{Action, Authority};

/// The owner, and what the subscription consumes as it.
pub struct Standing {
    authority: Authority,
    owner: String,
    topic: String,
    group: String,
    /// The policy version of the last verdict, and the verdict.
    last: Mutex<Option<(u64, bool)>>,
}

impl Standing {
    /// A standing to check, when security is on and the subscription has an owner (one
    /// created with security off has none, and nothing to check).
    pub fn new(
        authority: &Authority,
        owner: Option<&str>,
        topic: &str,
        group: &str,
    ) -> Option<Self> {
        let owner = owner.filter(|_| authority.is_enabled())?;
        Some(Self {
            authority: authority.clone(),
            owner: owner.to_owned(),
            topic: topic.to_owned(),
            group: group.to_owned(),
            last: Mutex::new(None),
        })
    }

    /// True while the owner may consume the topic as the group. A change either way is
    /// logged; a revocation is also audited as a denial of the owner.
    pub fn allowed(&self, subscription: &str) -> bool {
        let version = self.authority.version();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((seen, verdict)) = *last {
            if seen == version {
                return verdict;
            }
        }
        let verdict = (self.authority.policy())
            .allowing(&self.owner, Action::Consume, &self.topic, &self.group)
            .is_some();
        let before = last.map(|(_, verdict)| verdict);
        *last = Some((version, verdict));
        drop(last);
        match (before, verdict) {
            (Some(true) | None, false) => {
                log::warn!(
                    "webhook {subscription}: suspended: principal {:?} may no longer consume {} \
                     as {} (policy version {version}); nothing is posted until it may again",
                    self.owner,
                    self.topic,
                    self.group
                );
                // Audited as the owner's denial (the check records it).
                let _ = self.authority.check(
                    &self.owner,
                    &format!("webhook {subscription}"),
                    Action::Consume,
                    &self.topic,
                    Some(&self.group),
                );
            }
            (Some(false), true) => log::info!(
                "webhook {subscription}: resumed: principal {:?} may consume {} as {} again",
                self.owner,
                self.topic,
                self.group
            ),
            _ => {}
        }
        verdict
    }

    /// Why deliveries are suspended, for the subscription's `last_error`.
    pub fn why_suspended(&self) -> String {
        format!(
            "suspended: principal {:?} may no longer consume {} as {}",
            self.owner, self.topic, self.group
        )
    }
}
