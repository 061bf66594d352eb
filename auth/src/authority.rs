//! A process's live copy of the policy, and the two questions every server asks of it: who
//! is this token's holder, and may this principal do this here?
//!
//! The policy sits behind an `RwLock<Arc<Policy>>` with its version beside it in an atomic:
//! a check on a hot path (a broker shard's produce) compares the version it last saw with one
//! relaxed load, which never writes a shared cache line, and keeps its verdicts in a
//! [`Verdicts`] cache of its own; the lock is taken only when the version moved. A newer policy
//! replaces the old one whole (see `crate::policy`).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::audit::{Audit, Outcome};
use crate::policy::{Action, Policy};
use crate::token::{AuthError, Token};

/// Allowed verdicts a [`Verdicts`] cache keeps before it starts again.
const VERDICTS_MAX: usize = 64;

/// A refused action: who, what, where, and why, for the caller and the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The principal.
    pub principal: String,
    /// The action.
    pub action: Action,
    /// The resource (topic, service topic, broker id).
    pub resource: String,
    /// The group, for `consume`.
    pub group: Option<String>,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "principal {:?} may not {} on {} {:?}",
            self.principal,
            self.action,
            self.action.resource_kind(),
            self.resource
        )?;
        if let Some(group) = &self.group {
            write!(f, " as group {group:?}")?;
        }
        write!(
            f,
            ": no grant allows it (defibus admin acl grant {} {} {}",
            self.principal, self.action, self.resource
        )?;
        if let Some(group) = &self.group {
            write!(f, " --group {group}")?;
        }
        f.write_str(")")
    }
}

impl std::error::Error for Denial {}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Who.
    pub principal: String,
    /// Until when the credentials hold, ms since the Unix epoch (`u64::MAX`: a certificate's
    /// own validity was checked at the handshake).
    pub expires_at_ms: u64,
    /// The token's id, when a token authenticated the caller: a connection ends when its
    /// token leaves the policy (revoked).
    pub token_id: Option<String>,
}

impl Session {
    /// Why the session no longer holds under `authority`'s policy at `now_ms`, if it does not:
    /// its token expired or was revoked. Checked by servers at each request (expiry) and at
    /// each policy change (revocation).
    pub fn lapsed(&self, authority: &Authority, now_ms: u64) -> Option<String> {
        if now_ms >= self.expires_at_ms {
            return Some(format!(
                "the token of {} expired at {}",
                self.principal,
                crate::audit::rfc3339(self.expires_at_ms)
            ));
        }
        let id = self.token_id.as_deref()?;
        if authority.is_enabled() && !authority.policy().tokens.iter().any(|t| t.id == id) {
            return Some(format!("token {id} of {} was revoked", self.principal));
        }
        None
    }
}

/// Allowed verdicts of one caller (a connection), valid for one policy version.
#[derive(Debug, Default)]
pub struct Verdicts {
    version: u64,
    allowed: Vec<(Action, Box<str>, Box<str>)>,
}

struct Inner {
    version: AtomicU64,
    policy: RwLock<Arc<Policy>>,
    audit: Audit,
}

/// The policy of one process, or none (security off); cheap to clone and share.
#[derive(Clone)]
pub struct Authority {
    inner: Option<Arc<Inner>>,
}

/// Two authorities are equal when they are the same one (clones of each other), or both off.
impl PartialEq for Authority {
    fn eq(&self, other: &Self) -> bool {
        match (&self.inner, &other.inner) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Authority {}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            None => f.write_str("Authority(off)"),
            Some(_) => write!(f, "Authority(policy v{})", self.version()),
        }
    }
}

impl Authority {
    /// Security off: every caller may do everything, nothing is audited.
    pub const fn open() -> Self {
        Self { inner: None }
    }

    /// Security on, starting from `policy` (which may be the empty version 0 until a newer
    /// one is fetched: then nothing is allowed), auditing to `audit`.
    pub fn new(policy: Policy, audit: Audit) -> Self {
        Self {
            inner: Some(Arc::new(Inner {
                version: AtomicU64::new(policy.version),
                policy: RwLock::new(Arc::new(policy)),
                audit,
            })),
        }
    }

    /// True when callers must authenticate and be granted what they do.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The policy version held (0 when off or none fetched yet).
    pub fn version(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.version.load(Ordering::Acquire))
    }

    /// The policy held (an empty one when off).
    pub fn policy(&self) -> Arc<Policy> {
        match &self.inner {
            None => Arc::default(),
            Some(inner) => inner
                .policy
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    /// Takes `policy` if it is newer than the one held; true when it was taken.
    pub fn install(&self, policy: Policy) -> bool {
        let Some(inner) = &self.inner else {
            return false;
        };
        let mut held = inner.policy.write().unwrap_or_else(PoisonError::into_inner);
        if policy.version <= held.version {
            return false;
        }
        let version = policy.version;
        *held = Arc::new(policy);
        inner.version.store(version, Ordering::Release);
        drop(held);
        log::info!("security policy version {version} in force");
        true
    }

    /// The audit log, to record admin actions with; `None` when security is off.
    pub fn audit(&self) -> Option<&Audit> {
        self.inner.as_ref().map(|i| &i.audit)
    }

    /// Authenticates a connection from `peer` presenting `token`; a failure is audited.
    pub fn authenticate(&self, token: &str, peer: &str) -> Result<Session, AuthError> {
        let Some(inner) = &self.inner else {
            return Ok(Session {
                principal: "anonymous".to_owned(),
                expires_at_ms: u64::MAX,
                token_id: None,
            });
        };
        let result = token.parse::<Token>().and_then(|token| {
            self.policy()
                .authenticate(&token, crate::now_ms())
                .map(|(principal, expires_at_ms)| Session {
                    principal,
                    expires_at_ms,
                    token_id: Some(token.id().to_owned()),
                })
        });
        if let Err(e) = &result {
            inner.audit.record(
                None,
                peer,
                "authenticate",
                "-",
                Outcome::Denied,
                &e.to_string(),
            );
        }
        result
    }

    /// Records that a connection from `peer` needed authentication and had none.
    pub fn refuse_unauthenticated(&self, peer: &str, attempted: &str) {
        if let Some(inner) = &self.inner {
            inner.audit.record(
                None,
                peer,
                attempted,
                "-",
                Outcome::Denied,
                &AuthError::Missing.to_string(),
            );
        }
    }

    /// May `principal` do `action` on `resource` (as a member of `group`, for `consume`)?
    /// A denial is audited, with `peer`.
    pub fn check(
        &self,
        principal: &str,
        peer: &str,
        action: Action,
        resource: &str,
        group: Option<&str>,
    ) -> Result<(), Denial> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        if self
            .policy()
            .allowing(principal, action, resource, group.unwrap_or(""))
            .is_some()
        {
            return Ok(());
        }
        let denial = Denial {
            principal: principal.to_owned(),
            action,
            resource: resource.to_owned(),
            group: group.map(str::to_owned),
        };
        let what = match group {
            Some(group) => format!("{resource} group {group}"),
            None => resource.to_owned(),
        };
        inner.audit.record(
            Some(principal),
            peer,
            action.name(),
            &what,
            Outcome::Denied,
            "no grant allows it",
        );
        Err(denial)
    }

    /// [`Self::check`] through a caller's cache of allowed verdicts: after the first check of
    /// an (action, resource, group), the same check costs one atomic load and a short scan
    /// until the policy changes.
    pub fn check_cached(
        &self,
        verdicts: &mut Verdicts,
        principal: &str,
        peer: &str,
        action: Action,
        resource: &str,
        group: Option<&str>,
    ) -> Result<(), Denial> {
        if self.inner.is_none() {
            return Ok(());
        }
        let version = self.version();
        let group_key = group.unwrap_or("");
        if verdicts.version == version {
            let hit = verdicts
                .allowed
                .iter()
                .any(|(a, r, g)| *a == action && **r == *resource && **g == *group_key);
            if hit {
                return Ok(());
            }
        } else {
            verdicts.version = version;
            verdicts.allowed.clear();
        }
        self.check(principal, peer, action, resource, group)?;
        if verdicts.allowed.len() >= VERDICTS_MAX {
            verdicts.allowed.clear();
        }
        verdicts
            .allowed
            .push((action, resource.into(), group_key.into()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::Pattern;
    use crate::policy::Grant;

    fn authority_with(grants: &[(&str, &str, &str)]) -> (Authority, String) {
        let mut policy = Policy {
            version: 1,
            ..Policy::default()
        };
        for (principal, action, resource) in grants {
            policy.grant(Grant {
                principal: Pattern::new(principal).unwrap(),
                action: action.parse().unwrap(),
                resource: Pattern::new(resource).unwrap(),
                group: Pattern::any(),
            });
        }
        let token = policy
            .issue_token("alice", crate::now_ms(), 60_000)
            .unwrap();
        (
            Authority::new(policy, Audit::to_log("test")),
            token.reveal(),
        )
    }

    #[test]
    fn a_denial_names_principal_action_and_resource() {
        let (authority, _) = authority_with(&[]);
        let denial = authority
            .check("alice", "peer", Action::AdminTopic, "A10-20190001", None)
            .unwrap_err();
        let text = denial.to_string();
        assert!(text.contains("\"alice\""), "{text}");
        assert!(text.contains("admin_topic"), "{text}");
        assert!(text.contains("A10-20190001"), "{text}");
    }

    #[test]
    fn a_newer_policy_changes_cached_verdicts() {
        let (authority, token) = authority_with(&[("alice", "produce", "A10-*")]);
        let session = authority.authenticate(&token, "peer").unwrap();
        assert_eq!(session.principal, "alice");
        let mut verdicts = Verdicts::default();
        let check = |authority: &Authority, verdicts: &mut Verdicts| {
            authority.check_cached(verdicts, "alice", "peer", Action::Produce, "A10-1", None)
        };
        assert!(check(&authority, &mut verdicts).is_ok());
        assert!(check(&authority, &mut verdicts).is_ok());
        let mut next = (*authority.policy()).clone();
        next.grants.clear();
        next.version = 2;
        assert!(authority.install(next.clone()));
        assert!(
            !authority.install(next),
            "the same version is not taken twice"
        );
        assert!(check(&authority, &mut verdicts).is_err());
    }

    #[test]
    fn security_off_allows_everything() {
        let authority = Authority::open();
        assert!(
            authority
                .check("x", "p", Action::AdminAcl, "*", None)
                .is_ok()
        );
        assert!(authority.authenticate("garbage", "p").is_ok());
    }
}
