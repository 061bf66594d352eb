//! Check-then-parse framing of a byte stream, and frame encoding.

use bytes::{Bytes, BytesMut};

use super::{
    ExtError, ExtField, ExtFields, FrameHeader, FrameLimits, FrameMeta, HEADER_LEN, HeaderError,
    MAGIC_BYTES, array_at, offset,
};
use crate::codes::Status;

/// Appends a complete frame to `out` and returns its length. `ext` must be a multiple of
/// [`EXT_ALIGN`](super::EXT_ALIGN) bytes (see
/// [`encode_ext`](super::encode_ext)); on error `out` is unchanged.
pub fn encode_frame(
    meta: &FrameMeta,
    ext: &[u8],
    body: &[u8],
    out: &mut Vec<u8>,
) -> Result<usize, HeaderError> {
    let header = FrameHeader::seal(meta, ext, body)?;
    let len = HEADER_LEN + ext.len() + body.len();
    out.reserve(len);
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(ext);
    out.extend_from_slice(body);
    Ok(len)
}

/// What is wrong with a frame beyond its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameFault {
    /// The header is invalid.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// The body checksum does not match the extension and body.
    #[error("body checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BodyChecksum {
        /// Checksum in the header.
        stored: u32,
        /// Checksum of the bytes.
        computed: u32,
    },
    /// The extension section is malformed.
    #[error("header extension: {0}")]
    Ext(#[from] ExtError),
}

impl FrameFault {
    /// The status to answer with before closing the connection.
    pub fn status(&self) -> Status {
        match self {
            Self::Header(e) => e.status(),
            Self::BodyChecksum { .. } => Status::ChecksumMismatch,
            Self::Ext(_) => Status::MalformedFrame,
        }
    }
}

/// Why bytes are not (yet) a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The buffer ends before the frame does; read until it holds `needed` bytes in total.
    /// Only reported once the header is known valid, so `needed` is within the limits.
    #[error("incomplete frame: need {needed} bytes in total")]
    Incomplete {
        /// Total bytes the buffer must hold to make progress.
        needed: usize,
    },
    /// The bytes can never become a valid frame; answer with [`FrameFault::status`] and close.
    #[error("invalid frame at byte {offset}: {reason}")]
    Invalid {
        /// Position in the buffer of the offending field (for checksum mismatches, the field
        /// holding the checksum that disagrees).
        offset: usize,
        /// What is wrong.
        reason: FrameFault,
    },
}

/// A complete frame's header and total length, as found by [`Framer::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    /// The validated header.
    pub header: FrameHeader,
    /// Bytes of the whole frame; the next frame starts there.
    pub frame_len: usize,
}

/// A parsed frame borrowed from the receive buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The validated header.
    pub header: FrameHeader,
    /// The header extension, structurally valid (see [`ExtFields`]).
    pub ext: &'a [u8],
    /// The body.
    pub body: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Bytes of the whole frame.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.ext.len() + self.body.len()
    }

    /// The extension fields, unknown tags included for the caller to skip.
    pub fn ext_fields(&self) -> impl Iterator<Item = ExtField<'a>> + use<'a> {
        // Validated by the framer, so no errors remain to report.
        ExtFields::new(self.ext).filter_map(Result::ok)
    }
}

/// A parsed frame owning its bytes, split from a [`BytesMut`] receive buffer without copying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameBytes {
    /// The validated header.
    pub header: FrameHeader,
    /// The header extension, structurally valid.
    pub ext: Bytes,
    /// The body.
    pub body: Bytes,
}

impl FrameBytes {
    /// A borrowed view of this frame.
    pub fn as_frame(&self) -> Frame<'_> {
        Frame {
            header: self.header,
            ext: &self.ext,
            body: &self.body,
        }
    }
}

/// A parsed frame whose body is still mutable: a broker stamps a produced batch in place and
/// keeps it, instead of copying it out of the receive buffer first.
#[derive(Debug, PartialEq, Eq)]
pub struct FrameMut {
    /// The validated header.
    pub header: FrameHeader,
    /// The header extension, structurally valid.
    pub ext: Bytes,
    /// The body: its own region of the receive buffer's storage, writable.
    pub body: BytesMut,
}

impl FrameMut {
    /// The same frame, immutable (no copy).
    pub fn freeze(self) -> FrameBytes {
        FrameBytes {
            header: self.header,
            ext: self.ext,
            body: self.body.freeze(),
        }
    }
}

/// Check-then-parse decoder of a byte stream into frames, enforcing [`FrameLimits`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Framer {
    limits: FrameLimits,
}

impl Framer {
    /// A framer enforcing `limits`.
    pub fn new(limits: FrameLimits) -> Self {
        Self { limits }
    }

    /// The limits enforced.
    pub fn limits(&self) -> &FrameLimits {
        &self.limits
    }

    /// Says whether `buf` starts with a complete frame within limits, from the header alone.
    ///
    /// A wrong magic is reported as soon as four bytes are in, and an oversized frame as soon
    /// as the header is, so no peer makes us wait for, or buffer, a frame we would refuse.
    pub fn check(&self, buf: &[u8]) -> Result<FrameInfo, FrameError> {
        if let Some(magic) = buf.get(..4) {
            if magic != MAGIC_BYTES {
                let found = u32::from_le_bytes(array_at(magic, 0));
                return Err(invalid_header(HeaderError::BadMagic { found }));
            }
        }
        let header = FrameHeader::decode(buf)?;
        header.validate(&self.limits).map_err(invalid_header)?;
        // Validated against a `usize` limit, so the length fits a `usize`.
        let frame_len = header.frame_len() as usize;
        if buf.len() < frame_len {
            return Err(FrameError::Incomplete { needed: frame_len });
        }
        Ok(FrameInfo { header, frame_len })
    }

    /// Parses the frame at the start of `buf`: [`Self::check`], then the body checksum and the
    /// extension's structure. Bytes after the frame are left alone.
    pub fn parse<'a>(&self, buf: &'a [u8]) -> Result<Frame<'a>, FrameError> {
        let FrameInfo { header, frame_len } = self.check(buf)?;
        let ext_end = HEADER_LEN + header.ext_len as usize;
        let (Some(ext), Some(body)) = (buf.get(HEADER_LEN..ext_end), buf.get(ext_end..frame_len))
        else {
            // Unreachable after check; reported rather than risking a panic.
            return Err(FrameError::Incomplete { needed: frame_len });
        };
        let mut computed = crc32c::crc32c(ext);
        if !header.body_crc_absent() {
            computed = crc32c::crc32c_append(computed, body);
        }
        if computed != header.body_crc32c {
            return Err(FrameError::Invalid {
                offset: offset::BODY_CRC,
                reason: FrameFault::BodyChecksum {
                    stored: header.body_crc32c,
                    computed,
                },
            });
        }
        if let Some(Err(e)) = ExtFields::new(ext).find(Result::is_err) {
            return Err(FrameError::Invalid {
                offset: HEADER_LEN + e.at(),
                reason: FrameFault::Ext(e),
            });
        }
        Ok(Frame { header, ext, body })
    }

    /// Splits the first complete frame off `buf` as owned [`Bytes`], without copying.
    ///
    /// Returns `Ok(None)` when more bytes are needed, after reserving room for the rest of the
    /// frame in `buf` (bounded by the limits, since the header was checked first), so the next
    /// socket read can land the whole frame.
    pub fn split_frame(&self, buf: &mut BytesMut) -> Result<Option<FrameBytes>, FrameError> {
        Ok(self.split_frame_mut(buf)?.map(FrameMut::freeze))
    }

    /// [`Self::split_frame`], leaving the body writable.
    pub fn split_frame_mut(&self, buf: &mut BytesMut) -> Result<Option<FrameMut>, FrameError> {
        let (header, frame_len) = match self.parse(buf) {
            Ok(frame) => (frame.header, frame.frame_len()),
            Err(FrameError::Incomplete { needed }) => {
                buf.reserve(needed.saturating_sub(buf.len()));
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let mut head = buf.split_to(frame_len);
        let ext_end = HEADER_LEN + header.ext_len as usize;
        let body = head.split_off(ext_end);
        Ok(Some(FrameMut {
            header,
            ext: head.freeze().slice(HEADER_LEN..),
            body,
        }))
    }
}

fn invalid_header(e: HeaderError) -> FrameError {
    FrameError::Invalid {
        offset: e.field_offset(),
        reason: FrameFault::Header(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::Command;
    use crate::frame::encode_ext;

    fn sample(meta: &FrameMeta, body: &[u8]) -> Vec<u8> {
        let mut ext = Vec::new();
        encode_ext(
            &[ExtField {
                tag: 7,
                value: b"trace",
            }],
            &mut ext,
        )
        .unwrap();
        let mut out = Vec::new();
        encode_frame(meta, &ext, body, &mut out).unwrap();
        out
    }

    #[test]
    fn encoded_frames_parse_back() {
        let bytes = sample(&FrameMeta::request(Command::Produce, 42), b"body");
        let frame = Framer::default().parse(&bytes).unwrap();
        assert_eq!(frame.header.command(), Ok(Command::Produce));
        assert_eq!(frame.header.request_id, 42);
        assert_eq!(frame.body, b"body");
        let fields: Vec<_> = frame.ext_fields().collect();
        assert_eq!(
            fields,
            [ExtField {
                tag: 7,
                value: b"trace"
            }]
        );
        assert_eq!(frame.ext.len(), 16);
        assert_eq!(frame.frame_len(), bytes.len());
    }

    #[test]
    fn split_frame_takes_one_frame_and_waits_for_the_rest() {
        let first = sample(&FrameMeta::oneway(Command::Heartbeat, 1), b"");
        let second = sample(&FrameMeta::request(Command::Stats, 2), b"xyz");
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&first);
        buf.extend_from_slice(&second[..10]);
        let framer = Framer::default();
        let got = framer.split_frame(&mut buf).unwrap().unwrap();
        assert_eq!(got.header.request_id, 1);
        assert!(got.body.is_empty());
        assert_eq!(framer.split_frame(&mut buf), Ok(None));
        buf.extend_from_slice(&second[10..HEADER_LEN]);
        assert_eq!(framer.split_frame(&mut buf), Ok(None));
        assert!(buf.capacity() >= second.len(), "room reserved for the body");
        buf.extend_from_slice(&second[HEADER_LEN..]);
        let got = framer.split_frame(&mut buf).unwrap().unwrap();
        assert_eq!(&got.body[..], b"xyz");
        assert!(buf.is_empty());
    }

    #[test]
    fn a_split_body_is_writable_without_touching_the_next_frame() {
        let first = sample(&FrameMeta::request(Command::Stats, 1), b"abc");
        let second = sample(&FrameMeta::request(Command::Stats, 2), b"xyz");
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&first);
        buf.extend_from_slice(&second);
        let framer = Framer::default();
        let mut got = framer.split_frame_mut(&mut buf).unwrap().unwrap();
        got.body[0] = b'A';
        assert_eq!(&got.body[..], b"Abc");
        let frozen = got.freeze();
        assert_eq!(
            (frozen.header.request_id, &frozen.body[..]),
            (1, &b"Abc"[..])
        );
        let next = framer.split_frame(&mut buf).unwrap().unwrap();
        assert_eq!((next.header.request_id, &next.body[..]), (2, &b"xyz"[..]));
    }

    #[test]
    fn body_crc_absent_still_guards_the_extension() {
        let meta = FrameMeta::request(Command::Produce, 9).without_body_crc();
        let mut bytes = sample(&meta, b"batch");
        let len = bytes.len();
        bytes[len - 1] ^= 1; // The body is not checked by the frame...
        assert!(Framer::default().parse(&bytes).is_ok());
        bytes[HEADER_LEN + 4] ^= 1; // ...but the extension is.
        let err = Framer::default().parse(&bytes).unwrap_err();
        assert!(matches!(
            err,
            FrameError::Invalid {
                offset: offset::BODY_CRC,
                reason: FrameFault::BodyChecksum { .. }
            }
        ));
    }

    #[test]
    fn garbage_is_refused_at_the_magic() {
        let err = Framer::default().check(b"GET / HTTP/1.1").unwrap_err();
        assert_eq!(
            err,
            FrameError::Invalid {
                offset: 0,
                reason: FrameFault::Header(HeaderError::BadMagic {
                    found: u32::from_le_bytes(*b"GET ")
                })
            }
        );
        assert!(err.to_string().contains("\"DFB1\""), "{err}");
        assert_eq!(
            Framer::default().check(b"DFB"),
            Err(FrameError::Incomplete { needed: HEADER_LEN })
        );
    }
}
