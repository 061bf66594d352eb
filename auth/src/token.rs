//! Bearer tokens: `dfb.<id>.<secret>`, where the id (8 hex digits) names the token in the
//! policy and in logs, and the secret (32 random bytes, hex) is known only to its holder.
//!
//! The policy keeps the SHA-256 of the secret, never the secret: a copy of the policy (every
//! process holds one) cannot be turned back into a token. 256 random bits make a salt and a
//! slow hash pointless; the comparison is constant-time anyway.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use sha2::{Digest, Sha256};

/// The token text's prefix, so a token is recognisable in a config or a leaked paste.
pub const PREFIX: &str = "dfb";
/// Bytes of randomness in a secret.
const SECRET_BYTES: usize = 32;
/// Bytes of randomness in an id.
const ID_BYTES: usize = 4;

/// A token as its holder has it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    id: String,
    secret: String,
}

/// Why a token or a connection was not authenticated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The text is not a token at all.
    #[error("not a DeFiBus token (expected dfb.<id>.<secret>)")]
    Malformed,
    /// No token with this id is in the policy (never issued, or revoked).
    #[error("token {id} is unknown or revoked")]
    Unknown {
        /// The token's id.
        id: String,
    },
    /// The id is known but the secret does not match.
    #[error("token {id} does not match its secret")]
    Mismatch {
        /// The token's id.
        id: String,
    },
    /// The token expired.
    #[error("token {id} of {principal} expired at {expired}")]
    Expired {
        /// The token's id.
        id: String,
        /// Whose it was.
        principal: String,
        /// When it expired (RFC 3339).
        expired: String,
    },
    /// The connection presented nothing, and the server requires authentication.
    #[error("no token was presented (give one with --token-file or DEFIBUS_TOKEN_FILE)")]
    Missing,
}

impl Token {
    /// A new random token.
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let mut id = [0u8; ID_BYTES];
        let mut secret = [0u8; SECRET_BYTES];
        rng.fill_bytes(&mut id);
        rng.fill_bytes(&mut secret);
        Self {
            id: hex(&id),
            secret: hex(&secret),
        }
    }

    /// The token's public id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The SHA-256 of the secret, hex: what the policy stores.
    pub fn secret_sha256(&self) -> String {
        sha256_hex(&self.secret)
    }

    /// The full token text, to hand to its holder once.
    pub fn reveal(&self) -> String {
        format!("{PREFIX}.{}.{}", self.id, self.secret)
    }

    /// True when the secret hashes to `sha256_hex`, compared in constant time.
    pub fn secret_matches(&self, sha256_hex_expected: &str) -> bool {
        let actual = self.secret_sha256();
        let (a, b) = (actual.as_bytes(), sha256_hex_expected.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl FromStr for Token {
    type Err = AuthError;

    fn from_str(text: &str) -> Result<Self, AuthError> {
        let text = text.trim();
        let mut parts = text.split('.');
        let (Some(PREFIX), Some(id), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let is_hex = |s: &str, len: usize| {
            s.len() == len * 2
                && s.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        };
        if !is_hex(id, ID_BYTES) || !is_hex(secret, SECRET_BYTES) {
            return Err(AuthError::Malformed);
        }
        Ok(Self {
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }
}

// A token is a secret: debug prints show the id only.
impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({})", self.id)
    }
}

fn sha256_hex(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_parses_back_and_matches_its_hash() {
        let token = Token::generate();
        let text = token.reveal();
        let parsed: Token = text.parse().unwrap();
        assert_eq!(parsed, token);
        assert!(parsed.secret_matches(&token.secret_sha256()));
        assert!(!Token::generate().secret_matches(&token.secret_sha256()));
        assert!(!format!("{token:?}").contains(&token.secret));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for text in [
            "",
            "dfb",
            "dfb.x.y",
            "abc.0011aabb.00",
            "dfb.0011aabb",
            "dfb.0011AABB.00",
        ] {
            assert_eq!(text.parse::<Token>(), Err(AuthError::Malformed), "{text:?}");
        }
    }
}
