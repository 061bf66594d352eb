//! Security payloads: a connection's authentication and the security policy's distribution
//! (`docs/ARCHITECTURE.md` §9).
//!
//! The policy itself (tokens, stored hashed, and grants) travels as a JSON document the
//! `auth` crate owns: the protocol carries it without knowing its shape, so the policy can
//! grow fields without a new command.

use rkyv::{Archive, Deserialize, Serialize};

/// The body of `Authenticate`: the token a client presents, once per connection.
#[derive(Archive, Serialize, Deserialize, Clone, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Authenticate {
    /// The token as `defibus admin token create` printed it (`dfb.<id>.<secret>`).
    pub token: String,
}

// A token is a secret: it never appears in a debug print or a log line.
impl std::fmt::Debug for Authenticate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticate").finish_non_exhaustive()
    }
}

/// The answer to `Authenticate`: who the server now takes the connection to be.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Authenticated {
    /// The principal the token belongs to.
    pub principal: String,
    /// When the token expires, ms since the Unix epoch: the connection is closed at its first
    /// request after then, or after the token is revoked.
    pub expires_at_ms: u64,
}

/// The body of `PolicyGet`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct PolicyGet {
    /// The version the caller holds; the answer carries the document only when the server's
    /// is newer (0: always).
    pub known_version: u64,
}

/// The body of `PolicyPut`, and the answer to `PolicyGet` and `PolicyPut`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct PolicyDocument {
    /// The policy's version. In `PolicyPut`, the newest version the writer read: the server
    /// takes the document only if it holds no newer one (so two writers cannot undo each
    /// other's change, and a nameserver that missed a change catches up), and stores it as
    /// that version + 1.
    pub version: u64,
    /// The policy as JSON (the `auth` crate's `Policy`); empty in an answer to `PolicyGet`
    /// when the caller's copy is current.
    pub json: String,
}
