//! Patterns over topic, group and principal names: literal text with `*` standing for any
//! run of characters (`A10-*`, `*-20190001`, `A10-2019*`, `*`).
//!
//! Names are `[area]-[serviceId]` topics, group names and principals: short ASCII strings,
//! so a simple backtracking match is linear enough (a pattern has a handful of stars).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A name pattern; see the module docs.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pattern(String);

impl Pattern {
    /// The pattern matching every name.
    pub fn any() -> Self {
        Self("*".to_owned())
    }

    /// Parses a pattern: any text; an empty pattern is refused (it would match nothing, and
    /// is always a slip).
    pub fn new(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("an empty pattern matches nothing: use `*` for any name".to_owned());
        }
        if text.chars().any(char::is_whitespace) {
            return Err(format!("pattern {text:?} contains whitespace"));
        }
        Ok(Self(text.to_owned()))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when the pattern is `*`.
    pub fn is_any(&self) -> bool {
        self.0 == "*"
    }

    /// True when `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        glob(self.0.as_bytes(), name.as_bytes())
    }
}

/// Wildcard match with `*` only: the classic greedy scan that remembers the last star.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if p < pattern.len() && pattern[p] == name[n] {
            p += 1;
            n += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::new(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, name: &str) -> bool {
        Pattern::new(pattern).unwrap().matches(name)
    }

    #[test]
    fn prefixes_suffixes_and_infixes_match() {
        assert!(m("*", "A10-20190001"));
        assert!(m("A10-*", "A10-20190001"));
        assert!(!m("A10-*", "A11-20190001"));
        assert!(m("*-20190001", "A10-20190001"));
        assert!(!m("*-20190001", "A10-20190002"));
        assert!(m("A1*-2019*", "A10-20190001"));
        assert!(m("A10-20190001", "A10-20190001"));
        assert!(!m("A10-2019000", "A10-20190001"));
        assert!(m("**", ""));
        assert!(!m("a*b", "a"));
    }

    #[test]
    fn empty_and_blank_patterns_are_refused() {
        assert!(Pattern::new("").is_err());
        assert!(Pattern::new("A10 *").is_err());
    }
}
