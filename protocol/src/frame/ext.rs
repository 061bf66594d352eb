//! The header extension: optional, skippable fields between the header and the body.

use super::{EXT_ALIGN, array_at};

/// Why a header extension is malformed or cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExtError {
    /// A field runs past the end of the extension.
    #[error("field at byte {at} runs past the end")]
    Truncated {
        /// Byte position of the field in the extension.
        at: usize,
    },
    /// Bytes after the end marker are not zero.
    #[error("non-zero padding at byte {at}")]
    PaddingNotZero {
        /// Byte position of the end marker in the extension.
        at: usize,
    },
    /// A field value longer than `u16::MAX` bytes, or with the reserved tag 0.
    #[error("field with tag {tag} of {len} bytes cannot be encoded")]
    Unencodable {
        /// The field's tag.
        tag: u16,
        /// Its value's length.
        len: usize,
    },
}

impl ExtError {
    /// Byte position of the problem within the extension.
    pub fn at(&self) -> usize {
        match self {
            Self::Truncated { at } | Self::PaddingNotZero { at } => *at,
            Self::Unencodable { .. } => 0,
        }
    }
}

/// One optional header field: `[tag: u16][len: u16][value: len bytes]`.
///
/// Tag 0, or the end of the extension, ends the fields; everything after the last field is
/// zero padding up to [`EXT_ALIGN`] (possibly shorter than a tag). Readers skip
/// tags they do not know, which is how optional fields are added without a version bump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtField<'a> {
    /// What the field is; non-zero. Tags from `0x8000` are for private, experimental use.
    pub tag: u16,
    /// The raw value.
    pub value: &'a [u8],
}

/// Iterates the fields of a header extension; yields one error and stops on malformed input.
#[derive(Clone, Debug)]
pub struct ExtFields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> ExtFields<'a> {
    /// The fields of `ext`.
    pub fn new(ext: &'a [u8]) -> Self {
        Self { bytes: ext, at: 0 }
    }
}

impl<'a> Iterator for ExtFields<'a> {
    type Item = Result<ExtField<'a>, ExtError>;

    fn next(&mut self) -> Option<Self::Item> {
        let at = self.at;
        let rest = self.bytes.get(at..).filter(|r| !r.is_empty())?;
        self.at = self.bytes.len(); // Stop after an error or the end marker.
        // Padding may be shorter than a tag; a lone trailing byte counts as a zero tag here
        // and is then judged as padding.
        let tag = match rest {
            [low, high, ..] => u16::from_le_bytes([*low, *high]),
            _ => 0,
        };
        if tag == 0 {
            return if rest.iter().all(|&b| b == 0) {
                None
            } else {
                Some(Err(ExtError::PaddingNotZero { at }))
            };
        }
        let Some(head) = rest.get(..4) else {
            return Some(Err(ExtError::Truncated { at }));
        };
        let len = u16::from_le_bytes(array_at(head, 2)) as usize;
        let Some(value) = rest.get(4..4 + len) else {
            return Some(Err(ExtError::Truncated { at }));
        };
        self.at = at + 4 + len;
        Some(Ok(ExtField { tag, value }))
    }
}

/// Appends `fields` to `out` as a header extension, zero-padded to [`EXT_ALIGN`]; on error
/// `out` is unchanged. No fields give an empty extension.
pub fn encode_ext(fields: &[ExtField<'_>], out: &mut Vec<u8>) -> Result<(), ExtError> {
    let start = out.len();
    for field in fields {
        let len = u16::try_from(field.value.len())
            .ok()
            .filter(|_| field.tag != 0);
        let Some(len) = len else {
            out.truncate(start);
            return Err(ExtError::Unencodable {
                tag: field.tag,
                len: field.value.len(),
            });
        };
        out.extend_from_slice(&field.tag.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(field.value);
    }
    let written = out.len() - start;
    out.resize(start + written.next_multiple_of(EXT_ALIGN), 0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_extensions_are_rejected() {
        fn fields(b: &[u8]) -> Vec<Result<ExtField<'_>, ExtError>> {
            ExtFields::new(b).collect()
        }
        assert_eq!(fields(&[0; 8]), []);
        assert_eq!(
            fields(&[1, 0, 1, 0, 9, 0, 0, 0]),
            [Ok(ExtField {
                tag: 1,
                value: &[9]
            })]
        );
        assert_eq!(
            fields(&[1, 0, 0, 0, 0, 0, 0, 5]),
            [
                Ok(ExtField { tag: 1, value: &[] }),
                Err(ExtError::PaddingNotZero { at: 4 })
            ]
        );
        assert_eq!(
            fields(&[0, 0, 0, 0, 1, 0, 0, 0]),
            [Err(ExtError::PaddingNotZero { at: 0 })]
        );
        assert_eq!(
            fields(&[1, 0, 9, 0, 1, 0, 0, 0]),
            [Err(ExtError::Truncated { at: 0 })]
        );
        assert_eq!(
            fields(&[1, 0, 1, 0, 9, 2, 0]),
            [
                Ok(ExtField {
                    tag: 1,
                    value: &[9]
                }),
                Err(ExtError::Truncated { at: 5 })
            ]
        );
        let mut out = vec![1];
        let err = encode_ext(&[ExtField { tag: 0, value: b"" }], &mut out);
        assert_eq!(err, Err(ExtError::Unencodable { tag: 0, len: 0 }));
        assert_eq!(out, [1]);
    }
}
