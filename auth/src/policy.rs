//! The security policy: who holds which token, and which principal may do what where.
//!
//! One JSON document, versioned: every change makes a new version (the nameservers store it,
//! every other process holds a copy; see [`crate::authority`]). A grant names a principal
//! pattern, an action (or `*` for every action), a resource pattern and, for `consume`, a
//! group pattern; nothing is allowed without a grant.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::pattern::Pattern;
use crate::token::{AuthError, Token};

/// What a principal does; each is checked where it happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Produce events to a topic (broker).
    Produce,
    /// Consume a topic as a member of a group (broker); the grant names the group pattern.
    Consume,
    /// Send requests to a service's topic (broker).
    Request,
    /// Answer requests of a service's topic (broker).
    Respond,
    /// Create, update or delete a topic, or scrub its logs (broker).
    AdminTopic,
    /// Apply for, deploy or take offline a service (SGS), and update service locations (GSL).
    AdminService,
    /// Change the policy: grants and tokens (nameserver).
    AdminAcl,
    /// Register as a broker with a broker id, heartbeat, and replicate (nameserver,
    /// controller, brokers); the resource is the broker id.
    Broker,
}

impl Action {
    /// Every action, in the order `acl list` shows them.
    pub const ALL: [Action; 8] = [
        Action::Produce,
        Action::Consume,
        Action::Request,
        Action::Respond,
        Action::AdminTopic,
        Action::AdminService,
        Action::AdminAcl,
        Action::Broker,
    ];

    /// The action's name, as written in grants and shown in denials.
    pub const fn name(self) -> &'static str {
        match self {
            Action::Produce => "produce",
            Action::Consume => "consume",
            Action::Request => "request",
            Action::Respond => "respond",
            Action::AdminTopic => "admin_topic",
            Action::AdminService => "admin_service",
            Action::AdminAcl => "admin_acl",
            Action::Broker => "broker",
        }
    }

    /// What the action's resource is, for messages ("topic", "broker id").
    pub const fn resource_kind(self) -> &'static str {
        match self {
            Action::AdminService => "service topic",
            Action::AdminAcl => "policy",
            Action::Broker => "broker id",
            _ => "topic",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Action {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Action::ALL
            .into_iter()
            .find(|a| a.name() == text)
            .ok_or_else(|| {
                let names: Vec<_> = Action::ALL.iter().map(|a| a.name()).collect();
                format!("unknown action {text:?}: one of {}, or *", names.join(", "))
            })
    }
}

/// The actions a grant covers: one, or every one (`*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Actions {
    /// Every action.
    All,
    /// One action.
    One(Action),
}

impl Actions {
    fn covers(self, action: Action) -> bool {
        match self {
            Actions::All => true,
            Actions::One(a) => a == action,
        }
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actions::All => f.write_str("*"),
            Actions::One(a) => a.fmt(f),
        }
    }
}

impl FromStr for Actions {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "*" {
            Ok(Actions::All)
        } else {
            text.parse().map(Actions::One)
        }
    }
}

impl Serialize for Actions {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Actions {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// One permission: `principal` may do `action` on resources matching `resource` (and, for
/// `consume`, as a member of a group matching `group`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Who: a principal name, or a pattern (`*`: every authenticated principal).
    pub principal: Pattern,
    /// What.
    pub action: Actions,
    /// Where: a topic pattern (a broker id pattern for `broker`).
    pub resource: Pattern,
    /// For `consume`, the groups; ignored by other actions. Default `*`.
    #[serde(default = "Pattern::any")]
    pub group: Pattern,
}

/// Why a grant's text does not parse: which part, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{part}: {reason}")]
pub struct GrantError {
    /// `principal`, `action`, `resource` or `group`.
    pub part: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl Grant {
    /// A grant from its four parts as text, as `defibus admin acl grant` takes them:
    /// principal pattern, action (or `*`), resource pattern, group pattern.
    pub fn parse(
        principal: &str,
        action: &str,
        resource: &str,
        group: &str,
    ) -> Result<Self, GrantError> {
        let pattern = |part: &'static str, text: &str| {
            Pattern::new(text).map_err(|reason| GrantError { part, reason })
        };
        Ok(Self {
            principal: pattern("principal", principal)?,
            action: action.parse().map_err(|reason| GrantError {
                part: "action",
                reason,
            })?,
            resource: pattern("resource", resource)?,
            group: pattern("group", group)?,
        })
    }

    /// True when the grant allows `principal` to do `action` on `resource` in `group`.
    pub fn allows(&self, principal: &str, action: Action, resource: &str, group: &str) -> bool {
        self.action.covers(action)
            && self.principal.matches(principal)
            && self.resource.matches(resource)
            && (action != Action::Consume || self.group.matches(group))
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.principal, self.action, self.resource)?;
        if matches!(self.action, Actions::All | Actions::One(Action::Consume))
            && !self.group.is_any()
        {
            write!(f, " group {}", self.group)?;
        }
        Ok(())
    }
}

/// A token as the policy holds it: the hash of its secret, never the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// The token's public id.
    pub id: String,
    /// Whose token it is.
    pub principal: String,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    /// When it was made, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// When it stops being accepted, ms since the Unix epoch.
    pub expires_at_ms: u64,
}

/// Why a policy document was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Not JSON of the policy's shape.
    #[error("not a valid policy document: {0}")]
    Json(#[from] serde_json::Error),
    /// Two tokens share an id.
    #[error("two tokens have the id {0}")]
    DuplicateToken(String),
    /// A principal name is empty or holds whitespace or `*`.
    #[error("invalid principal name {0:?}: a non-empty name without whitespace or `*`")]
    InvalidPrincipal(String),
}

/// The policy document; see the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Increases by one with every change; a process takes a policy only if newer.
    pub version: u64,
    /// Every token accepted.
    #[serde(default)]
    pub tokens: Vec<TokenRecord>,
    /// Every grant.
    #[serde(default)]
    pub grants: Vec<Grant>,
}

impl Policy {
    /// Parses and checks a policy document.
    pub fn from_json(json: &str) -> Result<Self, PolicyError> {
        let policy: Policy = serde_json::from_str(json)?;
        policy.validate()?;
        Ok(policy)
    }

    /// The document, pretty-printed (it is stored where operators read it).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a policy always serialises")
    }

    fn validate(&self) -> Result<(), PolicyError> {
        let mut ids: Vec<&str> = self.tokens.iter().map(|t| t.id.as_str()).collect();
        ids.sort_unstable();
        if let Some(pair) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(PolicyError::DuplicateToken(pair[0].to_owned()));
        }
        for token in &self.tokens {
            check_principal(&token.principal)?;
        }
        Ok(())
    }

    /// Who `token` belongs to, and until when, at time `now_ms`.
    pub fn authenticate(&self, token: &Token, now_ms: u64) -> Result<(String, u64), AuthError> {
        let record = self
            .tokens
            .iter()
            .find(|r| r.id == token.id())
            .ok_or_else(|| AuthError::Unknown {
                id: token.id().to_owned(),
            })?;
        if !token.secret_matches(&record.secret_sha256) {
            return Err(AuthError::Mismatch {
                id: record.id.clone(),
            });
        }
        if now_ms >= record.expires_at_ms {
            return Err(AuthError::Expired {
                id: record.id.clone(),
                principal: record.principal.clone(),
                expired: crate::audit::rfc3339(record.expires_at_ms),
            });
        }
        Ok((record.principal.clone(), record.expires_at_ms))
    }

    /// The grant that allows `principal` to do `action` on `resource` (in `group`), if any.
    pub fn allowing(
        &self,
        principal: &str,
        action: Action,
        resource: &str,
        group: &str,
    ) -> Option<&Grant> {
        self.grants
            .iter()
            .find(|g| g.allows(principal, action, resource, group))
    }

    /// Adds `grant`; false when an identical one is already there.
    pub fn grant(&mut self, grant: Grant) -> bool {
        if self.grants.contains(&grant) {
            return false;
        }
        self.grants.push(grant);
        true
    }

    /// Removes the grants equal to `grant`; how many there were (0 or 1).
    pub fn revoke(&mut self, grant: &Grant) -> usize {
        let before = self.grants.len();
        self.grants.retain(|g| g != grant);
        before - self.grants.len()
    }

    /// Issues a token for `principal`, valid for `ttl_ms` from `now_ms`; returns it (the only
    /// time its secret is seen).
    pub fn issue_token(
        &mut self,
        principal: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Token, PolicyError> {
        check_principal(principal)?;
        let token = loop {
            let token = Token::generate();
            if self.tokens.iter().all(|t| t.id != token.id()) {
                break token;
            }
        };
        self.tokens.push(TokenRecord {
            id: token.id().to_owned(),
            principal: principal.to_owned(),
            secret_sha256: token.secret_sha256(),
            created_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(ttl_ms),
        });
        Ok(token)
    }

    /// Removes the token with `id`; false when there is none.
    pub fn revoke_token(&mut self, id: &str) -> bool {
        let before = self.tokens.len();
        self.tokens.retain(|t| t.id != id);
        before != self.tokens.len()
    }
}

fn check_principal(name: &str) -> Result<(), PolicyError> {
    if name.is_empty() || name.contains('*') || name.chars().any(char::is_whitespace) {
        return Err(PolicyError::InvalidPrincipal(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(principal: &str, action: &str, resource: &str, group: &str) -> Grant {
        Grant::parse(principal, action, resource, group).unwrap()
    }

    #[test]
    fn a_grant_that_does_not_parse_names_the_part() {
        let err = Grant::parse("app", "fly", "A10-*", "*").unwrap_err();
        assert_eq!(err.part, "action");
        let err = Grant::parse("app", "produce", "", "*").unwrap_err();
        assert_eq!(err.part, "resource");
        assert!(err.to_string().starts_with("resource: "), "{err}");
    }

    #[test]
    fn nothing_is_allowed_without_a_grant() {
        let mut policy = Policy::default();
        assert!(
            policy
                .allowing("alice", Action::Produce, "A10-20190001", "")
                .is_none()
        );
        policy.grant(grant("alice", "produce", "A10-*", "*"));
        assert!(
            policy
                .allowing("alice", Action::Produce, "A10-20190001", "")
                .is_some()
        );
        assert!(
            policy
                .allowing("alice", Action::Produce, "A11-20190001", "")
                .is_none()
        );
        assert!(
            policy
                .allowing("bob", Action::Produce, "A10-20190001", "")
                .is_none()
        );
        assert!(
            policy
                .allowing("alice", Action::Consume, "A10-20190001", "g")
                .is_none()
        );
    }

    #[test]
    fn consume_grants_are_scoped_to_groups() {
        let mut policy = Policy::default();
        policy.grant(grant("alice", "consume", "*-20190001", "payments-*"));
        assert!(
            policy
                .allowing("alice", Action::Consume, "A10-20190001", "payments-eu")
                .is_some()
        );
        assert!(
            policy
                .allowing("alice", Action::Consume, "A10-20190001", "audit")
                .is_none()
        );
    }

    #[test]
    fn grants_and_revokes_are_idempotent_and_round_trip_as_json() {
        let mut policy = Policy::default();
        assert!(policy.grant(grant("*", "*", "*", "*")));
        assert!(!policy.grant(grant("*", "*", "*", "*")));
        let token = policy.issue_token("admin", 1_000, 10_000).unwrap();
        let back = Policy::from_json(&policy.to_json()).unwrap();
        assert_eq!(back, policy);
        assert!(
            !back.to_json().contains(&token.reveal()),
            "secrets are never stored"
        );
        assert_eq!(policy.revoke(&grant("*", "*", "*", "*")), 1);
        assert_eq!(policy.revoke(&grant("*", "*", "*", "*")), 0);
    }

    #[test]
    fn tokens_authenticate_until_they_expire_or_are_revoked() {
        let mut policy = Policy::default();
        let token = policy.issue_token("app", 1_000, 10_000).unwrap();
        assert_eq!(policy.authenticate(&token, 5_000).unwrap().0, "app");
        assert!(matches!(
            policy.authenticate(&token, 11_000),
            Err(AuthError::Expired { .. })
        ));
        let other = Token::generate();
        assert!(matches!(
            policy.authenticate(&other, 5_000),
            Err(AuthError::Unknown { .. })
        ));
        assert!(policy.revoke_token(token.id()));
        assert!(matches!(
            policy.authenticate(&token, 5_000),
            Err(AuthError::Unknown { .. })
        ));
    }

    #[test]
    fn bad_documents_are_refused_with_the_reason() {
        let err = Policy::from_json(
            r#"{"version":1,"grants":[{"principal":"a","action":"fly","resource":"*"}]}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown action \"fly\""), "{err}");
        assert!(Policy::from_json(r#"{"version":1,"extra":1}"#).is_err());
    }
}
