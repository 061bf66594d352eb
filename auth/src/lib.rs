//! The security model every DeFiBus process shares (`docs/ARCHITECTURE.md` §9).
//!
//! - [`token`]: bearer tokens, `dfb.<id>.<secret>`, stored only as a SHA-256 of the secret;
//! - [`pattern`]: topic and group patterns (`A10-*`, `*-20190001`);
//! - [`policy`]: the document of tokens and grants, and what it allows;
//! - [`authority`]: a process's live copy of the policy, shared by its threads, swapped
//!   whole when a newer version arrives; it authenticates tokens and answers every check;
//! - [`audit`]: the audit log of admin actions and denials;
//! - [`settings`]: the `[security]` table of every process's configuration;
//! - [`bootstrap`]: a first policy and its tokens (`defibus security init`).
//!
//! The crate knows no runtime and no socket: servers call [`Authority::authenticate`] when a
//! connection presents a token and [`Authority::check`] where an action happens.

pub mod audit;
pub mod authority;
pub mod bootstrap;
pub mod pattern;
pub mod policy;
pub mod settings;
pub mod token;

pub use audit::{Audit, AuditRecord, Outcome};
pub use authority::{Authority, Denial, Session};
pub use pattern::Pattern;
pub use policy::{Action, Grant, GrantError, Policy, PolicyError, TokenRecord};
pub use settings::SecuritySettings;
pub use token::{AuthError, Token};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
