//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the `traceparent` and
//! `tracestate` a message carries from its producer to every consumer, and from a request to
//! its reply.
//!
//! Both are parsed and checked here, once, at the edge (the client, the proxy): a value that
//! breaks the rules below is refused with the rule it breaks, never passed on.
//!
//! - `traceparent` is `version-trace_id-parent_id-flags` in lowercase hex:
//!   `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`. Version `00` must be exactly
//!   55 characters; version `ff` is invalid; a higher version is read by the version-00 rules
//!   (at least 55 characters, a `-` and visible ASCII after the flags when longer) and
//!   written back as `00`,
//!   as the specification asks of a reader that does not know that version. A trace id of 32
//!   zeros or a parent id of 16 zeros is invalid. The flags are kept as given (bit 0:
//!   sampled).
//! - `tracestate` is a comma-separated list of `key=value` members, at most
//!   [`TRACESTATE_MEMBERS_MAX`], each key unique. Keys are a simple key (`[a-z0-9]` then up to
//!   255 of `[a-z0-9_*/-]`) or a multi-tenant key (`tenant@system`, tenant up to 241
//!   characters, system up to 14 starting with a letter); values are 1 to 256 printable ASCII
//!   characters other than `,` and `=`, not ending in a space. Empty members and spaces or tabs
//!   around members are allowed and dropped: what is kept is the members joined by `,`, at
//!   most [`TRACESTATE_LEN_MAX`] bytes (the 512 characters the specification asks every
//!   vendor to pass on). A `tracestate` travels only beside a `traceparent`.
//!
//! On the record (see [`crate::record::tag`]) a `traceparent` takes 25 bytes: trace id (16),
//! parent id (8), flags (1), version 00 implied (a later version would get a tag of its own);
//! a `tracestate` is its normalised text.

use std::fmt;

/// Length of a version-00 `traceparent` in characters.
pub const TRACEPARENT_LEN: usize = 55;
/// Most members a `tracestate` may list.
pub const TRACESTATE_MEMBERS_MAX: usize = 32;
/// Longest `tracestate` kept, in bytes, once empty members and spaces are dropped.
pub const TRACESTATE_LEN_MAX: usize = 512;
/// Bytes of an encoded `traceparent` property: trace id, parent id, flags.
pub const TRACEPARENT_BYTES: usize = 16 + 8 + 1;
/// The `sampled` bit of the trace flags.
pub const FLAG_SAMPLED: u8 = 0x01;

/// Why a `traceparent` or `tracestate` was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TraceContextError {
    /// The `traceparent` breaks the W3C format.
    #[error("invalid traceparent {value:?}: {reason}")]
    TraceParent {
        /// The value as given (cut to 64 characters).
        value: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// The `tracestate` breaks the W3C format or our bound on its length.
    #[error("invalid tracestate: {reason}")]
    TraceState {
        /// The rule it breaks, naming the member where there is one.
        reason: String,
    },
    /// A `tracestate` was given without a `traceparent`.
    #[error("a tracestate needs a traceparent beside it")]
    StateWithoutParent,
}

/// A W3C `traceparent`: which trace a message belongs to and the span it was sent from.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

impl TraceParent {
    /// A trace parent from its parts; refused when either id is all zeros.
    pub fn new(trace_id: [u8; 16], parent_id: [u8; 8], flags: u8) -> Result<Self, &'static str> {
        if trace_id == [0; 16] {
            return Err("the trace id is all zeros");
        }
        if parent_id == [0; 8] {
            return Err("the parent id is all zeros");
        }
        Ok(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// Parses the header form; see the module docs for the rules.
    pub fn parse(text: &str) -> Result<Self, TraceContextError> {
        let refuse = |reason| TraceContextError::TraceParent {
            value: text.chars().take(64).collect(),
            reason,
        };
        let bytes = text.as_bytes();
        if bytes.len() < TRACEPARENT_LEN {
            return Err(refuse(
                "expected 55 characters: 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>",
            ));
        }
        let version = hex_byte(&bytes[0..2])
            .ok_or_else(|| refuse("the version is not 2 lowercase hex digits"))?;
        if version == 0xff {
            return Err(refuse("version ff is invalid"));
        }
        if version == 0 && bytes.len() != TRACEPARENT_LEN {
            return Err(refuse("version 00 is exactly 55 characters"));
        }
        if bytes.len() > TRACEPARENT_LEN && bytes[TRACEPARENT_LEN] != b'-' {
            return Err(refuse(
                "a later version's fields must follow the flags after a '-'",
            ));
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return Err(refuse(
                "fields must be separated by '-' at characters 3, 36 and 53",
            ));
        }
        let mut trace_id = [0; 16];
        let mut parent_id = [0; 8];
        hex_into(&bytes[3..35], &mut trace_id)
            .ok_or_else(|| refuse("the trace id is not 32 lowercase hex digits"))?;
        hex_into(&bytes[36..52], &mut parent_id)
            .ok_or_else(|| refuse("the parent id is not 16 lowercase hex digits"))?;
        let flags = hex_byte(&bytes[53..55])
            .ok_or_else(|| refuse("the flags are not 2 lowercase hex digits"))?;
        Self::new(trace_id, parent_id, flags).map_err(refuse)
    }

    /// The trace id, shared by every span of one trace.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The id of the span the message was sent from.
    pub fn parent_id(&self) -> [u8; 8] {
        self.parent_id
    }

    /// The trace flags.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the sender may have recorded its span (flag bit 0).
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    /// The same trace and flags, sent from span `parent_id`: what a participant that records
    /// a span of its own passes on. Refused when `parent_id` is all zeros.
    pub fn with_parent_id(self, parent_id: [u8; 8]) -> Result<Self, &'static str> {
        Self::new(self.trace_id, parent_id, self.flags)
    }

    /// The property bytes: trace id, parent id, flags.
    pub fn to_bytes(&self) -> [u8; TRACEPARENT_BYTES] {
        let mut out = [0; TRACEPARENT_BYTES];
        out[..16].copy_from_slice(&self.trace_id);
        out[16..24].copy_from_slice(&self.parent_id);
        out[24] = self.flags;
        out
    }

    /// Reads the property bytes; `None` when they are not 25 bytes or an id is all zeros.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != TRACEPARENT_BYTES {
            return None;
        }
        let trace_id = bytes[..16].try_into().ok()?;
        let parent_id = bytes[16..24].try_into().ok()?;
        Self::new(trace_id, parent_id, bytes[24]).ok()
    }

    /// The trace id in lowercase hex, 32 characters.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The parent id in lowercase hex, 16 characters.
    pub fn parent_id_hex(&self) -> String {
        hex(&self.parent_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.parent_id),
            self.flags
        )
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

impl std::str::FromStr for TraceParent {
    type Err = TraceContextError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A checked, normalised W3C `tracestate`: members joined by `,`, without empty members or
/// surrounding spaces.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TraceState(String);

impl TraceState {
    /// Parses the header form (several header fields joined by `,` are one list); see the
    /// module docs for the rules. An empty list is refused: send no `tracestate` instead.
    pub fn parse(text: &str) -> Result<Self, TraceContextError> {
        let refuse = |reason: String| TraceContextError::TraceState { reason };
        let mut members: Vec<&str> = Vec::new();
        for member in text.split(',') {
            let member = member.trim_matches([' ', '\t']);
            if member.is_empty() {
                continue;
            }
            if members.len() == TRACESTATE_MEMBERS_MAX {
                return Err(refuse(format!(
                    "more than {TRACESTATE_MEMBERS_MAX} members"
                )));
            }
            let (key, value) = member
                .split_once('=')
                .ok_or_else(|| refuse(format!("member {:?} is not key=value", cut(member))))?;
            check_key(key).map_err(|why| refuse(format!("key {:?}: {why}", cut(key))))?;
            check_value(value).map_err(|why| refuse(format!("value of {key:?}: {why}")))?;
            if members
                .iter()
                .any(|m| m.split_once('=').is_some_and(|(k, _)| k == key))
            {
                return Err(refuse(format!("key {key:?} appears twice")));
            }
            members.push(member);
        }
        if members.is_empty() {
            return Err(refuse("no members: send no tracestate instead".into()));
        }
        let joined = members.join(",");
        if joined.len() > TRACESTATE_LEN_MAX {
            return Err(refuse(format!(
                "{} bytes, more than {TRACESTATE_LEN_MAX}",
                joined.len()
            )));
        }
        Ok(Self(joined))
    }

    /// The normalised text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The members as `(key, value)`, in order (the most recently updated vendor first).
    pub fn members(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.split(',').filter_map(|m| m.split_once('='))
    }
}

impl fmt::Display for TraceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TraceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceState({:?})", self.0)
    }
}

impl std::str::FromStr for TraceState {
    type Err = TraceContextError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Whether `text` is a normalised `tracestate` as stored in a record (what [`TraceState::parse`]
/// returns): a stored property is checked with this when its batch is parsed.
pub fn is_stored_tracestate(text: &str) -> bool {
    TraceState::parse(text).is_ok_and(|state| state.0 == text)
}

/// A message's trace context: its `traceparent` and, optionally, the `tracestate` beside it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace and the span the message was sent from.
    pub parent: TraceParent,
    /// Vendor-specific state, passed on untouched.
    pub state: Option<TraceState>,
}

impl TraceContext {
    /// A context with no `tracestate`.
    pub fn new(parent: TraceParent) -> Self {
        Self {
            parent,
            state: None,
        }
    }

    /// Parses the two header values: `traceparent` (absent: no context; then a `tracestate`
    /// is refused) and `tracestate` (absent, or empty after dropping empty members: none).
    pub fn parse(
        traceparent: Option<&str>,
        tracestate: Option<&str>,
    ) -> Result<Option<Self>, TraceContextError> {
        let state = match tracestate {
            Some(text) if !text.trim_matches([' ', '\t', ',']).is_empty() => {
                Some(TraceState::parse(text)?)
            }
            _ => None,
        };
        match traceparent {
            Some(text) => Ok(Some(Self {
                parent: TraceParent::parse(text)?,
                state,
            })),
            None if state.is_some() => Err(TraceContextError::StateWithoutParent),
            None => Ok(None),
        }
    }

    /// The `traceparent` header value.
    pub fn traceparent(&self) -> String {
        self.parent.to_string()
    }

    /// The `tracestate` header value, if any.
    pub fn tracestate(&self) -> Option<&str> {
        self.state.as_ref().map(TraceState::as_str)
    }
}

fn check_key(key: &str) -> Result<(), &'static str> {
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/".contains(&b);
    let starts_well = |part: &str| {
        part.as_bytes()
            .first()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    match key.split_once('@') {
        None => {
            if key.is_empty() || key.len() > 256 {
                return Err("a key is 1 to 256 characters");
            }
            if !starts_well(key) {
                return Err("a key starts with a lowercase letter or a digit");
            }
            if !key.bytes().all(allowed) {
                return Err("a key holds only a-z, 0-9, '_', '-', '*' and '/'");
            }
        }
        Some((tenant, system)) => {
            if tenant.is_empty() || tenant.len() > 241 || !starts_well(tenant) {
                return Err("a tenant is 1 to 241 characters, starting with a-z or 0-9");
            }
            if system.is_empty() || system.len() > 14 || !system.as_bytes()[0].is_ascii_lowercase()
            {
                return Err("a system id is 1 to 14 characters, starting with a-z");
            }
            if !tenant.bytes().chain(system.bytes()).all(allowed) {
                return Err("tenant and system hold only a-z, 0-9, '_', '-', '*' and '/'");
            }
        }
    }
    Ok(())
}

fn check_value(value: &str) -> Result<(), &'static str> {
    if value.is_empty() || value.len() > 256 {
        return Err("a value is 1 to 256 characters");
    }
    if !value
        .bytes()
        .all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
    {
        return Err("a value holds printable ASCII other than ',' and '='");
    }
    if value.ends_with(' ') {
        return Err("a value does not end with a space");
    }
    Ok(())
}

/// At most 64 characters of `text`, for error messages.
fn cut(text: &str) -> String {
    text.chars().take(64).collect()
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    Some(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?)
}

fn hex_into(text: &[u8], out: &mut [u8]) -> Option<()> {
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = hex_byte(pair)?;
    }
    Some(())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specifications_example_parses_and_prints_back() {
        let parent = TraceParent::parse(EXAMPLE).unwrap();
        assert_eq!(parent.to_string(), EXAMPLE);
        assert_eq!(parent.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.parent_id_hex(), "00f067aa0ba902b7");
        assert!(parent.sampled());
        assert_eq!(TraceParent::from_bytes(&parent.to_bytes()), Some(parent));
    }

    #[test]
    fn traceparents_breaking_a_rule_are_refused_with_the_rule() {
        let cases = [
            ("", "55 characters"),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
                "55 characters",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
                "exactly 55",
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "ff",
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                "trace id",
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "all zeros",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "all zeros",
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "separated",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
                "parent id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
                "flags",
            ),
            (
                "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version",
            ),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
                "after a '-'",
            ),
        ];
        for (text, why) in cases {
            let error = TraceParent::parse(text).unwrap_err().to_string();
            assert!(error.contains(why), "{text:?}: {error}");
        }
    }

    #[test]
    fn a_later_version_is_read_by_the_version_00_rules_and_written_as_00() {
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
        assert_eq!(TraceParent::parse(later).unwrap().to_string(), EXAMPLE);
        let exact = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(TraceParent::parse(exact).unwrap().to_string(), EXAMPLE);
    }

    #[test]
    fn stored_bytes_with_a_zero_id_or_a_wrong_length_are_not_a_traceparent() {
        let parent = TraceParent::parse(EXAMPLE).unwrap();
        let bytes = parent.to_bytes();
        assert!(TraceParent::from_bytes(&bytes[..24]).is_none());
        let mut zero = bytes;
        zero[..16].fill(0);
        assert!(TraceParent::from_bytes(&zero).is_none());
    }

    #[test]
    fn tracestates_are_normalised_and_bounded() {
        let state = TraceState::parse(" rojo=00f067aa0ba902b7 ,, congo=t61rcWkgMzE,\t").unwrap();
        assert_eq!(state.as_str(), "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
        assert!(is_stored_tracestate(state.as_str()));
        assert!(!is_stored_tracestate("rojo=1, congo=2"));
        let members: Vec<_> = state.members().collect();
        assert_eq!(
            members,
            [("rojo", "00f067aa0ba902b7"), ("congo", "t61rcWkgMzE")]
        );
        TraceState::parse("fw529a3039@dt=1,1tenant@vendor=x,a_b-c*d/e=v").unwrap();
        let thirty_two: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
        TraceState::parse(&thirty_two.join(",")).unwrap();
        let cases = [
            (format!("{},k32=v", thirty_two.join(",")), "more than 32"),
            ("a=1,a=2".to_owned(), "twice"),
            ("Upper=1".to_owned(), "key"),
            ("novalue".to_owned(), "key=value"),
            ("k=".to_owned(), "1 to 256"),
            ("k=a,b".to_owned(), "key=value"),
            ("k=a\tb".to_owned(), "printable"),
            ("k=é".to_owned(), "printable"),
            ("t@Sys=1".to_owned(), "system id"),
            (",,".to_owned(), "no members"),
            (
                (0..3)
                    .map(|i| format!("k{i}={}", "v".repeat(200)))
                    .collect::<Vec<_>>()
                    .join(","),
                "more than 512",
            ),
        ];
        for (text, why) in cases {
            let error = TraceState::parse(&text).unwrap_err().to_string();
            assert!(error.contains(why), "{text:?}: {error}");
        }
    }

    #[test]
    fn a_context_needs_a_traceparent_for_its_tracestate() {
        assert_eq!(TraceContext::parse(None, None), Ok(None));
        assert_eq!(
            TraceContext::parse(None, Some("a=1")),
            Err(TraceContextError::StateWithoutParent)
        );
        let context = TraceContext::parse(Some(EXAMPLE), Some(" "))
            .unwrap()
            .unwrap();
        assert_eq!(context.tracestate(), None);
        let context = TraceContext::parse(Some(EXAMPLE), Some("a=1"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (context.traceparent().as_str(), context.tracestate()),
            (EXAMPLE, Some("a=1"))
        );
    }
}
