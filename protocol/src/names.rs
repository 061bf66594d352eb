//! Names that cross process boundaries: areas, service ids, topics, groups and client ids.
//!
//! Every service is exactly one topic, named `[area]-[serviceId]` (for example `A10-20190001`).
//! Names are parsed once, at the edge, into types that cannot hold an invalid value; the
//! error says which name was wrong and why, so an operator can fix the config that produced it.

use std::fmt;
use std::str::FromStr;

/// Length of an area code in bytes.
pub const AREA_LEN: usize = 3;
/// Longest service id, in bytes.
pub const SERVICE_ID_LEN_MAX: usize = 64;
/// Longest topic name: area, separator and service id.
pub const TOPIC_LEN_MAX: usize = AREA_LEN + 1 + SERVICE_ID_LEN_MAX;
/// Longest consumer or producer group name, in bytes.
pub const GROUP_LEN_MAX: usize = 128;
/// Longest client id, in bytes.
pub const CLIENT_ID_LEN_MAX: usize = 128;

/// Why a name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}{within}: {reason}")]
pub struct NameError {
    /// What kind of name it was meant to be ("area code", "topic", ...).
    pub kind: &'static str,
    /// The rejected input, lossily decoded and cut to a readable length.
    pub value: String,
    /// Where the rejected part sat, when it was part of a larger name (` in topic "A1-x"`);
    /// empty otherwise.
    pub within: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl NameError {
    fn new(kind: &'static str, value: &[u8], reason: &'static str) -> Self {
        Self {
            kind,
            value: shown(value),
            within: String::new(),
            reason,
        }
    }

    /// The same error, said of the part of `kind` name `whole` it was found in.
    fn within(self, kind: &str, whole: &str) -> Self {
        Self {
            within: format!(" in {kind} {:?}", shown(whole.as_bytes())),
            ..self
        }
    }
}

/// `value` as an error shows it: lossily decoded and cut to a readable length.
fn shown(value: &[u8]) -> String {
    String::from_utf8_lossy(&value[..value.len().min(80)]).into_owned()
}

/// An area: a data centre or logical zone, three uppercase letters or digits (`A10`, `SZ1`).
///
/// Brokers, clusters and clients each belong to one area; nearby routing prefers the caller's.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Area([u8; AREA_LEN]);

impl Area {
    /// Parses an area code from raw bytes (as found in a record property).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, NameError> {
        const KIND: &str = "area code";
        if bytes.len() != AREA_LEN {
            return Err(NameError::new(KIND, bytes, "must be exactly 3 characters"));
        }
        Self::from_bytes_checked(bytes).ok_or_else(|| {
            NameError::new(KIND, bytes, "must be uppercase letters A-Z or digits 0-9")
        })
    }

    /// Like [`Self::from_bytes`] without building an error, so record decoding never
    /// allocates on bad input.
    pub(crate) fn from_bytes_checked(bytes: &[u8]) -> Option<Self> {
        let code: [u8; AREA_LEN] = bytes.try_into().ok()?;
        code.iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            .then_some(Self(code))
    }

    /// The three ASCII bytes of the code.
    pub fn as_bytes(&self) -> &[u8; AREA_LEN] {
        &self.0
    }

    /// The code as a string slice.
    pub fn as_str(&self) -> &str {
        // Construction admits only ASCII, so this cannot fail; fall back to "" rather than panic.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl FromStr for Area {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::from_bytes(s.as_bytes())
    }
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Area({})", self.as_str())
    }
}

/// Checks a name made of ASCII letters, digits and a set of allowed punctuation.
fn check_charset(
    kind: &'static str,
    value: &str,
    len_max: usize,
    allowed_punctuation: &[u8],
    reason: &'static str,
) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::new(kind, value.as_bytes(), "must not be empty"));
    }
    if value.len() > len_max {
        return Err(NameError::new(kind, value.as_bytes(), "is too long"));
    }
    let ok = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || allowed_punctuation.contains(&b));
    if !ok {
        return Err(NameError::new(kind, value.as_bytes(), reason));
    }
    Ok(())
}

/// A service id: 1 to 64 ASCII letters, digits, `_` or `.` (DeFiBus uses 8 digits, `20190001`).
///
/// `-` is excluded so that a topic name splits unambiguously and reads the same to people.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ServiceId(String);

impl ServiceId {
    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ServiceId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        check_charset(
            "service id",
            s,
            SERVICE_ID_LEN_MAX,
            b"_.",
            "may hold only ASCII letters, digits, '_' and '.'",
        )?;
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A topic: exactly one service deployed in one area, named `[area]-[serviceId]`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Topic {
    area: Area,
    service: ServiceId,
}

impl Topic {
    /// The topic of `service` in `area`.
    pub fn new(area: Area, service: ServiceId) -> Self {
        Self { area, service }
    }

    /// The area part of the name.
    pub fn area(&self) -> Area {
        self.area
    }

    /// The service id part of the name.
    pub fn service(&self) -> &ServiceId {
        &self.service
    }
}

impl FromStr for Topic {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        const KIND: &str = "topic";
        if s.len() > TOPIC_LEN_MAX {
            return Err(NameError::new(KIND, s.as_bytes(), "is too long"));
        }
        let (area, rest) = s
            .split_once('-')
            .ok_or_else(|| NameError::new(KIND, s.as_bytes(), "must be [area]-[serviceId]"))?;
        // The part that is wrong, named as what it is: "invalid area code "A1" in topic
        // "A1-20190001": must be exactly 3 characters".
        let area = area.parse::<Area>().map_err(|e| e.within(KIND, s))?;
        let service = rest.parse::<ServiceId>().map_err(|e| e.within(KIND, s))?;
        Ok(Self { area, service })
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.area, self.service)
    }
}

/// A consumer or producer group: 1 to 128 ASCII letters, digits, `_`, `.` or `-`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct GroupName(String);

impl GroupName {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for GroupName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        check_charset(
            "group name",
            s,
            GROUP_LEN_MAX,
            b"_.-",
            "may hold only ASCII letters, digits, '_', '.' and '-'",
        )?;
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client instance id, unique per process (for example `10.0.0.7@4242#A10`).
///
/// Replies are addressed to it, so it must be printable and free of whitespace.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ClientId(String);

impl ClientId {
    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ClientId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        check_charset(
            "client id",
            s,
            CLIENT_ID_LEN_MAX,
            b"_.-:@#/",
            "may hold only ASCII letters, digits and _ . - : @ # /",
        )?;
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_round_trips_and_splits_at_the_area() {
        let topic: Topic = "A10-20190001".parse().unwrap();
        assert_eq!(topic.area().as_str(), "A10");
        assert_eq!(topic.service().as_str(), "20190001");
        assert_eq!(topic.to_string(), "A10-20190001");
    }

    #[test]
    fn bad_names_say_why() {
        let err = "a10-1".parse::<Topic>().unwrap_err();
        // The part that is wrong, and the topic it is in.
        assert_eq!(err.kind, "area code");
        assert_eq!(err.within, " in topic \"a10-1\"");
        assert!(err.reason.contains("uppercase"), "{err}");
        assert!(
            "A1-1"
                .parse::<Topic>()
                .unwrap_err()
                .reason
                .contains("exactly 3")
        );
        assert!(
            "A10"
                .parse::<Topic>()
                .unwrap_err()
                .reason
                .contains("[area]-[serviceId]")
        );
        assert!(
            "A10-"
                .parse::<Topic>()
                .unwrap_err()
                .reason
                .contains("empty")
        );
        assert!("A10-a-b".parse::<Topic>().is_err());
        assert!("A10-é".parse::<Topic>().is_err());
        let long = format!("A10-{}", "9".repeat(SERVICE_ID_LEN_MAX + 1));
        assert!(
            long.parse::<Topic>()
                .unwrap_err()
                .reason
                .contains("too long")
        );
        assert!("".parse::<GroupName>().is_err());
        assert!("g 1".parse::<GroupName>().is_err());
        assert!("host:1 x".parse::<ClientId>().is_err());
        assert!("10.0.0.7@4242#A10".parse::<ClientId>().is_ok());
    }

    #[test]
    fn error_display_names_the_kind_and_value() {
        let err = "A1".parse::<Area>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid area code \"A1\": must be exactly 3 characters"
        );
    }

    #[test]
    fn a_topics_error_names_the_part_that_is_wrong() {
        let err = "A1-20190001".parse::<Topic>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid area code \"A1\" in topic \"A1-20190001\": must be exactly 3 characters"
        );
        let err = "A10-".parse::<Topic>().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid service id \"\" in topic \"A10-\": "),
            "{err}"
        );
    }
}
