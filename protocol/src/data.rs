//! Data-plane addressing: which topic, queue and subscription a record batch belongs to.
//!
//! Batch-carrying commands (`Produce`, `Request`, `Reply`, `Push`, `ReplyPush`) keep their body
//! exactly one record batch, so the address travels in the frame's header extension
//! ([`crate::frame::ExtFields`]) under the tags of [`ext_tag`]. [`BatchAddress`] encodes and
//! decodes those fields; decoding borrows the topic from the frame, so the per-message path
//! allocates nothing.
//!
//! Every batch frame carries `TOPIC` and `QUEUE_ID` (on `ReplyPush`, the queue the request was
//! produced to); `Push` adds `SUBSCRIPTION_ID`. Unknown tags are skipped, so a newer peer may add
//! fields without breaking this one.

use crate::codes::Status;
use crate::frame::{ExtError, ExtField, ExtFields, encode_ext};
use crate::names::{NameError, TOPIC_LEN_MAX, Topic};

/// Tags of the data-plane header-extension fields.
pub mod ext_tag {
    /// The topic name, UTF-8, `[area]-[serviceId]`.
    pub const TOPIC: u16 = 1;
    /// The queue id within the topic on this broker, `u32` little-endian.
    pub const QUEUE_ID: u16 = 2;
    /// The subscription a `Push` belongs to, `u64` little-endian.
    pub const SUBSCRIPTION_ID: u16 = 3;
}

/// Why a batch frame's address fields are unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The extension section is malformed.
    #[error("header extension: {0}")]
    Ext(#[from] ExtError),
    /// A required field is absent.
    #[error("batch frame lacks the {field} extension field (tag {tag})")]
    Missing {
        /// The field's name.
        field: &'static str,
        /// Its tag.
        tag: u16,
    },
    /// A field appears twice; which one counts would be a guess.
    #[error("extension field {field} (tag {tag}) appears more than once")]
    Duplicate {
        /// The field's name.
        field: &'static str,
        /// Its tag.
        tag: u16,
    },
    /// A fixed-size field has the wrong length.
    #[error("extension field {field} has {len} bytes, expected {expected}")]
    BadLength {
        /// The field's name.
        field: &'static str,
        /// Length found.
        len: usize,
        /// Length required.
        expected: usize,
    },
    /// The topic is not UTF-8 or longer than any topic can be.
    #[error("topic field of {len} bytes is not a UTF-8 name of at most {TOPIC_LEN_MAX} bytes")]
    BadTopic {
        /// Length found.
        len: usize,
    },
    /// The topic is UTF-8 but not a valid `[area]-[serviceId]` name.
    #[error(transparent)]
    Name(#[from] NameError),
}

impl AddressError {
    /// The status to answer a request with when its address was refused.
    pub fn status(&self) -> Status {
        match self {
            Self::Name(_) | Self::BadTopic { .. } => Status::InvalidName,
            _ => Status::MalformedFrame,
        }
    }
}

/// Where a record batch goes or comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BatchAddress<'a> {
    /// The topic name; checked to be UTF-8 and short, not parsed (see [`Self::parse_topic`]).
    pub topic: &'a str,
    /// The queue id within the topic on the receiving broker.
    pub queue_id: u32,
    /// The subscription, on `Push` frames only.
    pub subscription_id: Option<u64>,
}

impl<'a> BatchAddress<'a> {
    /// The address of a produced or requested batch.
    pub fn new(topic: &'a str, queue_id: u32) -> Self {
        Self {
            topic,
            queue_id,
            subscription_id: None,
        }
    }

    /// The same address with a subscription id, as on `Push`.
    pub fn with_subscription(self, subscription_id: u64) -> Self {
        Self {
            subscription_id: Some(subscription_id),
            ..self
        }
    }

    /// Appends the address to `out` as a header extension (zero-padded to the extension
    /// alignment); on error `out` is unchanged.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), AddressError> {
        if self.topic.len() > TOPIC_LEN_MAX {
            return Err(AddressError::BadTopic {
                len: self.topic.len(),
            });
        }
        let queue_id = self.queue_id.to_le_bytes();
        let subscription_id = self.subscription_id.map(u64::to_le_bytes);
        let mut fields = [
            ExtField {
                tag: ext_tag::TOPIC,
                value: self.topic.as_bytes(),
            },
            ExtField {
                tag: ext_tag::QUEUE_ID,
                value: &queue_id,
            },
            ExtField {
                tag: ext_tag::SUBSCRIPTION_ID,
                value: &[],
            },
        ];
        let count = match &subscription_id {
            Some(id) => {
                fields[2].value = id;
                3
            }
            None => 2,
        };
        Ok(encode_ext(&fields[..count], out)?)
    }

    /// Reads the address from a frame's header extension, skipping unknown tags.
    pub fn decode(ext: &'a [u8]) -> Result<Self, AddressError> {
        let mut topic = None;
        let mut queue_id = None;
        let mut subscription_id = None;
        for field in ExtFields::new(ext) {
            let field = field?;
            match field.tag {
                ext_tag::TOPIC => {
                    let value = std::str::from_utf8(field.value)
                        .ok()
                        .filter(|t| t.len() <= TOPIC_LEN_MAX)
                        .ok_or(AddressError::BadTopic {
                            len: field.value.len(),
                        })?;
                    set_once(&mut topic, value, "TOPIC", field.tag)?;
                }
                ext_tag::QUEUE_ID => {
                    let value = u32::from_le_bytes(fixed(field.value, "QUEUE_ID")?);
                    set_once(&mut queue_id, value, "QUEUE_ID", field.tag)?;
                }
                ext_tag::SUBSCRIPTION_ID => {
                    let value = u64::from_le_bytes(fixed(field.value, "SUBSCRIPTION_ID")?);
                    set_once(&mut subscription_id, value, "SUBSCRIPTION_ID", field.tag)?;
                }
                _ => {}
            }
        }
        Ok(Self {
            topic: topic.ok_or(AddressError::Missing {
                field: "TOPIC",
                tag: ext_tag::TOPIC,
            })?,
            queue_id: queue_id.ok_or(AddressError::Missing {
                field: "QUEUE_ID",
                tag: ext_tag::QUEUE_ID,
            })?,
            subscription_id,
        })
    }

    /// The topic, parsed into a validated name (allocates; for the edges, not every message).
    pub fn parse_topic(&self) -> Result<Topic, AddressError> {
        Ok(self.topic.parse()?)
    }
}

fn set_once<T>(
    slot: &mut Option<T>,
    value: T,
    field: &'static str,
    tag: u16,
) -> Result<(), AddressError> {
    if slot.replace(value).is_some() {
        return Err(AddressError::Duplicate { field, tag });
    }
    Ok(())
}

fn fixed<const N: usize>(value: &[u8], field: &'static str) -> Result<[u8; N], AddressError> {
    value.try_into().map_err(|_| AddressError::BadLength {
        field,
        len: value.len(),
        expected: N,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_and_skip_unknown_tags() {
        let address = BatchAddress::new("A10-20190001", 3).with_subscription(77);
        let mut ext = Vec::new();
        address.encode(&mut ext).unwrap();
        assert_eq!(ext.len() % crate::frame::EXT_ALIGN, 0);
        assert_eq!(BatchAddress::decode(&ext).unwrap(), address);
        let mut ext = Vec::new();
        encode_ext(
            &[
                ExtField {
                    tag: 9,
                    value: b"x",
                },
                ExtField {
                    tag: ext_tag::QUEUE_ID,
                    value: &5u32.to_le_bytes(),
                },
                ExtField {
                    tag: ext_tag::TOPIC,
                    value: b"A10-1",
                },
            ],
            &mut ext,
        )
        .unwrap();
        let got = BatchAddress::decode(&ext).unwrap();
        assert_eq!(got, BatchAddress::new("A10-1", 5));
        assert_eq!(got.parse_topic().unwrap().to_string(), "A10-1");
    }

    #[test]
    fn bad_addresses_say_what_is_wrong() {
        let encode = |fields: &[ExtField<'_>]| {
            let mut ext = Vec::new();
            encode_ext(fields, &mut ext).unwrap();
            ext
        };
        let topic = ExtField {
            tag: ext_tag::TOPIC,
            value: b"A10-1",
        };
        let err = BatchAddress::decode(&encode(&[topic])).unwrap_err();
        assert_eq!(
            err,
            AddressError::Missing {
                field: "QUEUE_ID",
                tag: 2
            }
        );
        assert_eq!(err.status(), Status::MalformedFrame);
        let short_queue = ExtField {
            tag: ext_tag::QUEUE_ID,
            value: &[1, 0],
        };
        let err = BatchAddress::decode(&encode(&[topic, short_queue])).unwrap_err();
        assert!(err.to_string().contains("expected 4"), "{err}");
        let err = BatchAddress::decode(&encode(&[topic, topic])).unwrap_err();
        assert!(matches!(err, AddressError::Duplicate { .. }));
        let bad_utf8 = ExtField {
            tag: ext_tag::TOPIC,
            value: &[0xFF, 0xFE],
        };
        let err = BatchAddress::decode(&encode(&[bad_utf8])).unwrap_err();
        assert_eq!(err.status(), Status::InvalidName);
        let bad_name = BatchAddress::new("nope", 1);
        assert_eq!(
            bad_name.parse_topic().unwrap_err().status(),
            Status::InvalidName
        );
        let long = "A".repeat(TOPIC_LEN_MAX + 1);
        assert!(BatchAddress::new(&long, 0).encode(&mut Vec::new()).is_err());
        assert!(BatchAddress::decode(&[1, 0, 9, 0, 0, 0, 0, 0]).is_err());
    }
}
