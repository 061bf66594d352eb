//! Frames: the envelope of every message between DeFiBus processes.
//!
//! A frame is a fixed [`HEADER_LEN`]-byte header, then `ext_len` bytes of header extension,
//! then `body_len` bytes of body. All integers are little-endian.
//!
//! | offset | size | field | why |
//! |---|---|---|---|
//! | 0  | 4 | `magic` = `b"DFB1"` | rejects a wrong protocol (an HTTP client, a stale port) at once |
//! | 4  | 1 | `version` ([`VERSION`]) | lets the header layout change without guessing |
//! | 5  | 1 | `flags` ([`flag`]) | request / response / oneway / answer failures only, body checksum omitted |
//! | 6  | 2 | `command` ([`Command`] code) | what the frame asks for; responses echo it |
//! | 8  | 8 | `request_id` | pairs a response with its request on a multiplexed connection |
//! | 16 | 2 | `status` ([`Status`] code) | how a request went; zero on requests |
//! | 18 | 6 | reserved, zero | room for new fixed fields without a version bump |
//! | 24 | 4 | `ext_len`, a multiple of 8 | optional fields ([`ExtFields`]); keeps the body 8-aligned |
//! | 28 | 4 | `body_len` | the payload: a record batch or an rkyv control archive |
//! | 32 | 4 | `header_crc32c` | CRC32C of bytes `[0, 40)` with this field zeroed |
//! | 36 | 4 | `body_crc32c` | CRC32C of ext then body; of ext alone with [`flag::BODY_CRC_ABSENT`] |
//!
//! The header has its own checksum so that its lengths can be trusted, and the frame refused
//! if too large, before a single body byte is awaited. The body checksum is separate, and may be
//! omitted for record batches, which carry per-batch and per-record checksums end to end:
//! checksumming them twice on the hot path buys nothing.
//!
//! Decoding is check-then-parse ([`Framer::check`], then [`Framer::parse`]): nothing is
//! allocated and nothing panics, whatever the input.

use crate::codes::{Command, Status, UnknownCommand, UnknownStatus};
use crate::record::BATCH_LEN_MAX;

mod ext;
mod framer;
mod read_size;

pub use ext::{ExtError, ExtField, ExtFields, encode_ext};
pub use framer::{
    Frame, FrameBytes, FrameError, FrameFault, FrameInfo, FrameMut, Framer, encode_frame,
};
pub use read_size::ReadSizer;

/// Size of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 40;
/// The magic bytes every frame starts with.
pub const MAGIC_BYTES: [u8; 4] = *b"DFB1";
/// [`MAGIC_BYTES`] read as a little-endian `u32`, as held in [`FrameHeader::magic`].
pub const MAGIC: u32 = u32::from_le_bytes(MAGIC_BYTES);
/// The frame format version this build writes.
pub const VERSION: u8 = 1;
/// The oldest frame format version this build reads.
pub const VERSION_MIN: u8 = 1;
/// The extension length must be a multiple of this, so the body stays 8-byte aligned and a
/// control archive can be accessed in place.
pub const EXT_ALIGN: usize = 8;
/// Default limit on the extension section; optional fields are small.
pub const EXT_LEN_MAX_DEFAULT: usize = 64 << 10;
/// Default limit on a whole frame: one maximal record batch plus header and extension.
pub const FRAME_LEN_MAX_DEFAULT: usize = BATCH_LEN_MAX + (1 << 20);

/// Byte offsets of the header fields, as reported in [`FrameError::Invalid`].
pub mod offset {
    /// `magic`.
    pub const MAGIC: usize = 0;
    /// `version`.
    pub const VERSION: usize = 4;
    /// `flags`.
    pub const FLAGS: usize = 5;
    /// `command`.
    pub const COMMAND: usize = 6;
    /// `request_id`.
    pub const REQUEST_ID: usize = 8;
    /// `status`.
    pub const STATUS: usize = 16;
    /// The reserved bytes.
    pub const RESERVED: usize = 18;
    /// `ext_len`.
    pub const EXT_LEN: usize = 24;
    /// `body_len`.
    pub const BODY_LEN: usize = 28;
    /// `header_crc32c`.
    pub const HEADER_CRC: usize = 32;
    /// `body_crc32c`.
    pub const BODY_CRC: usize = 36;
}

/// Bits of [`FrameHeader::flags`].
pub mod flag {
    /// The frame is a request; exactly one of `REQUEST` and `RESPONSE` is set.
    pub const REQUEST: u8 = 1 << 0;
    /// The frame answers the request with the same request id.
    pub const RESPONSE: u8 = 1 << 1;
    /// A request that expects no response (pushes, credits, heartbeats); only with `REQUEST`.
    pub const ONEWAY: u8 = 1 << 2;
    /// The body checksum covers the extension only: the body is a record batch with its own
    /// checksums. Allowed only for commands that carry record batches.
    pub const BODY_CRC_ABSENT: u8 = 1 << 3;
    /// A request whose success needs no response: the receiver answers only a failure (any
    /// status but `Ok`, with its `ErrorReply`), and says nothing when the request succeeded.
    /// For requests whose success the sender learns another way, or not at all: a responder's
    /// `Reply` (the requester's `ReplyPush` is the news). One frame and one wake-up fewer per
    /// request, while a refusal is still reported. Only with `REQUEST`, never with `ONEWAY`.
    pub const FAILURES_ONLY: u8 = 1 << 4;
    /// Every bit this version defines; others must be zero.
    pub const KNOWN: u8 = REQUEST | RESPONSE | ONEWAY | BODY_CRC_ABSENT | FAILURES_ONLY;
}

/// The fixed frame header, field for field as on the wire (see the module table).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameHeader {
    /// Always [`MAGIC`].
    pub magic: u32,
    /// Frame format version.
    pub version: u8,
    /// Bits from [`flag`].
    pub flags: u8,
    /// A [`Command`] code; kept raw so unknown commands can still be framed and answered.
    pub command: u16,
    /// Correlation id chosen by the requester, echoed by the response.
    pub request_id: u64,
    /// A [`Status`] code; zero on requests.
    pub status: u16,
    /// Reserved for future fixed fields; must be zero.
    pub reserved: [u8; 6],
    /// Bytes of header extension after the header, a multiple of [`EXT_ALIGN`].
    pub ext_len: u32,
    /// Bytes of body after the extension.
    pub body_len: u32,
    /// CRC32C of the encoded header with this field zeroed.
    pub header_crc32c: u32,
    /// CRC32C of extension then body (of the extension alone with `BODY_CRC_ABSENT`).
    pub body_crc32c: u32,
}

const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<FrameHeader>() == HEADER_LEN);
    assert!(HEADER_LEN % 8 == 0 && align_of::<FrameHeader>() == 8);
    assert!(offset_of!(FrameHeader, magic) == offset::MAGIC);
    assert!(offset_of!(FrameHeader, version) == offset::VERSION);
    assert!(offset_of!(FrameHeader, flags) == offset::FLAGS);
    assert!(offset_of!(FrameHeader, command) == offset::COMMAND);
    assert!(offset_of!(FrameHeader, request_id) == offset::REQUEST_ID);
    assert!(offset_of!(FrameHeader, status) == offset::STATUS);
    assert!(offset_of!(FrameHeader, reserved) == offset::RESERVED);
    assert!(offset_of!(FrameHeader, ext_len) == offset::EXT_LEN);
    assert!(offset_of!(FrameHeader, body_len) == offset::BODY_LEN);
    assert!(offset_of!(FrameHeader, header_crc32c) == offset::HEADER_CRC);
    assert!(offset_of!(FrameHeader, body_crc32c) == offset::BODY_CRC);
    assert!(HEADER_LEN % EXT_ALIGN == 0);
    assert!(FRAME_LEN_MAX_DEFAULT >= HEADER_LEN + EXT_LEN_MAX_DEFAULT + BATCH_LEN_MAX);
    assert!(EXT_LEN_MAX_DEFAULT % EXT_ALIGN == 0);
};

/// Reads `N` bytes at `at`. Callers check the length first; should one not, this yields zeros
/// (which every validator then rejects) rather than panicking on untrusted input.
pub(crate) fn array_at<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = b.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

/// CRC32C of an encoded header with the header checksum field counted as zero.
fn header_crc(bytes: &[u8; HEADER_LEN]) -> u32 {
    let crc = crc32c::crc32c(&bytes[..offset::HEADER_CRC]);
    let crc = crc32c::crc32c_append(crc, &[0u8; 4]);
    crc32c::crc32c_append(crc, &bytes[offset::HEADER_CRC + 4..])
}

/// The limits a receiver enforces before buffering a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest whole frame (header, extension and body) accepted, in bytes.
    pub frame_len_max: usize,
    /// Largest extension section accepted, in bytes.
    pub ext_len_max: usize,
}

impl Default for FrameLimits {
    fn default() -> Self {
        Self {
            frame_len_max: FRAME_LEN_MAX_DEFAULT,
            ext_len_max: EXT_LEN_MAX_DEFAULT,
        }
    }
}

impl FrameLimits {
    /// No limit beyond what the header's `u32` lengths can express; for senders, which check
    /// encodability rather than a receiver's budget.
    pub const UNLIMITED: Self = Self {
        frame_len_max: usize::MAX,
        ext_len_max: usize::MAX,
    };
}

/// Why a frame header is invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The frame does not start with [`MAGIC_BYTES`]: not a DeFiBus peer, or a lost frame boundary.
    #[error("bad magic {found:#010x} (bytes {bytes:?}), expected {MAGIC:#010x} (b\"DFB1\")", bytes = .found.to_le_bytes())]
    BadMagic {
        /// The magic found, as a little-endian `u32`.
        found: u32,
    },
    /// A frame version this build does not read.
    #[error("unsupported frame version {found} (this build reads {VERSION_MIN}..={VERSION})")]
    UnsupportedVersion {
        /// The version found.
        found: u8,
    },
    /// The header checksum does not match: the header is corrupted and none of it is trusted.
    #[error("header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    HeaderChecksum {
        /// Checksum in the header.
        stored: u32,
        /// Checksum of the header bytes.
        computed: u32,
    },
    /// The reserved header bytes are not zero.
    #[error("reserved header bytes are not zero: {found:02x?}")]
    ReservedNotZero {
        /// The reserved bytes found.
        found: [u8; 6],
    },
    /// Flag bits this version does not define are set.
    #[error("unknown flag bits {unknown:#04x} in flags {flags:#04x}")]
    UnknownFlags {
        /// The whole flags byte.
        flags: u8,
        /// The undefined bits.
        unknown: u8,
    },
    /// The flags contradict each other or the command.
    #[error("conflicting flags {flags:#04x}: {reason}")]
    ConflictingFlags {
        /// The whole flags byte.
        flags: u8,
        /// Which rule they break.
        reason: &'static str,
    },
    /// A request carries a non-zero status.
    #[error("request carries status {status}; requests must carry 0")]
    StatusOnRequest {
        /// The status found.
        status: u16,
    },
    /// The extension length is not a multiple of [`EXT_ALIGN`].
    #[error("extension length {ext_len} is not a multiple of {EXT_ALIGN}")]
    ExtMisaligned {
        /// The declared extension length.
        ext_len: u32,
    },
    /// The extension is longer than the receiver accepts.
    #[error("extension of {ext_len} bytes exceeds the limit of {ext_len_max}")]
    ExtTooLarge {
        /// The declared extension length.
        ext_len: u64,
        /// The limit.
        ext_len_max: usize,
    },
    /// The whole frame is longer than the receiver accepts, or than a `u32` length can say.
    #[error("frame of {frame_len} bytes exceeds the limit of {frame_len_max}")]
    FrameTooLarge {
        /// Header, extension and body, as declared.
        frame_len: u64,
        /// The limit.
        frame_len_max: usize,
    },
}

impl HeaderError {
    /// Byte offset, within the header, of the field that is wrong.
    pub fn field_offset(&self) -> usize {
        match self {
            Self::BadMagic { .. } => offset::MAGIC,
            Self::UnsupportedVersion { .. } => offset::VERSION,
            Self::HeaderChecksum { .. } => offset::HEADER_CRC,
            Self::ReservedNotZero { .. } => offset::RESERVED,
            Self::UnknownFlags { .. } | Self::ConflictingFlags { .. } => offset::FLAGS,
            Self::StatusOnRequest { .. } => offset::STATUS,
            Self::ExtMisaligned { .. } | Self::ExtTooLarge { .. } => offset::EXT_LEN,
            Self::FrameTooLarge { .. } => offset::BODY_LEN,
        }
    }

    /// The status to answer with before closing the connection.
    pub fn status(&self) -> Status {
        match self {
            Self::UnsupportedVersion { .. } => Status::UnsupportedVersion,
            Self::HeaderChecksum { .. } => Status::ChecksumMismatch,
            Self::ExtTooLarge { .. } | Self::FrameTooLarge { .. } => Status::FrameTooLarge,
            _ => Status::MalformedFrame,
        }
    }
}

impl FrameHeader {
    /// Reads the header from the first [`HEADER_LEN`] bytes of `bytes`, without validating it.
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        let Some(b) = bytes.get(..HEADER_LEN) else {
            return Err(FrameError::Incomplete { needed: HEADER_LEN });
        };
        Ok(Self {
            magic: u32::from_le_bytes(array_at(b, offset::MAGIC)),
            version: b[offset::VERSION],
            flags: b[offset::FLAGS],
            command: u16::from_le_bytes(array_at(b, offset::COMMAND)),
            request_id: u64::from_le_bytes(array_at(b, offset::REQUEST_ID)),
            status: u16::from_le_bytes(array_at(b, offset::STATUS)),
            reserved: array_at(b, offset::RESERVED),
            ext_len: u32::from_le_bytes(array_at(b, offset::EXT_LEN)),
            body_len: u32::from_le_bytes(array_at(b, offset::BODY_LEN)),
            header_crc32c: u32::from_le_bytes(array_at(b, offset::HEADER_CRC)),
            body_crc32c: u32::from_le_bytes(array_at(b, offset::BODY_CRC)),
        })
    }

    /// The header as it goes on the wire, checksum fields as they are (see [`Self::seal`]).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.magic.to_le_bytes());
        b[4] = self.version;
        b[5] = self.flags;
        b[6..8].copy_from_slice(&self.command.to_le_bytes());
        b[8..16].copy_from_slice(&self.request_id.to_le_bytes());
        b[16..18].copy_from_slice(&self.status.to_le_bytes());
        b[18..24].copy_from_slice(&self.reserved);
        b[24..28].copy_from_slice(&self.ext_len.to_le_bytes());
        b[28..32].copy_from_slice(&self.body_len.to_le_bytes());
        b[32..36].copy_from_slice(&self.header_crc32c.to_le_bytes());
        b[36..40].copy_from_slice(&self.body_crc32c.to_le_bytes());
        b
    }

    /// The checksum this header should carry in `header_crc32c`.
    pub fn compute_header_crc(&self) -> u32 {
        header_crc(&self.encode())
    }

    /// Bytes of the whole frame as declared: header, extension and body.
    pub fn frame_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.ext_len) + u64::from(self.body_len)
    }

    /// Checks everything that can be judged from the header alone and says what is wrong.
    ///
    /// Version comes before the checksum, since a newer version may checksum differently and
    /// "unsupported version" is then the useful answer; every other field is judged only once
    /// the checksum says the header is intact.
    pub fn validate(&self, limits: &FrameLimits) -> Result<(), HeaderError> {
        if self.magic != MAGIC {
            return Err(HeaderError::BadMagic { found: self.magic });
        }
        if !(VERSION_MIN..=VERSION).contains(&self.version) {
            return Err(HeaderError::UnsupportedVersion {
                found: self.version,
            });
        }
        let computed = self.compute_header_crc();
        if computed != self.header_crc32c {
            return Err(HeaderError::HeaderChecksum {
                stored: self.header_crc32c,
                computed,
            });
        }
        if self.reserved != [0; 6] {
            return Err(HeaderError::ReservedNotZero {
                found: self.reserved,
            });
        }
        check_flags(self.flags, self.command)?;
        if self.flags & flag::REQUEST != 0 && self.status != 0 {
            return Err(HeaderError::StatusOnRequest {
                status: self.status,
            });
        }
        if self.ext_len as usize % EXT_ALIGN != 0 {
            return Err(HeaderError::ExtMisaligned {
                ext_len: self.ext_len,
            });
        }
        if u64::from(self.ext_len) > limits.ext_len_max as u64 {
            return Err(HeaderError::ExtTooLarge {
                ext_len: u64::from(self.ext_len),
                ext_len_max: limits.ext_len_max,
            });
        }
        if self.frame_len() > limits.frame_len_max as u64 {
            return Err(HeaderError::FrameTooLarge {
                frame_len: self.frame_len(),
                frame_len_max: limits.frame_len_max,
            });
        }
        Ok(())
    }

    /// True when the body checksum covers the extension only.
    pub fn body_crc_absent(&self) -> bool {
        self.flags & flag::BODY_CRC_ABSENT != 0
    }

    /// A complete, checksummed header for `ext` and `body`; the body is not copied, so the
    /// header, extension and body can be written with one vectored write.
    pub fn seal(meta: &FrameMeta, ext: &[u8], body: &[u8]) -> Result<Self, HeaderError> {
        let mut crc = crc32c::crc32c(ext);
        if meta.flags & flag::BODY_CRC_ABSENT == 0 {
            crc = crc32c::crc32c_append(crc, body);
        }
        Self::sealed(meta, ext, body.len() as u64, crc)
    }

    /// A complete header for `ext` and a body of `body_len` bytes that the checksum omits
    /// (`meta` has [`flag::BODY_CRC_ABSENT`]): for a body written from several buffers.
    pub fn seal_without_body(
        meta: &FrameMeta,
        ext: &[u8],
        body_len: u64,
    ) -> Result<Self, HeaderError> {
        if meta.flags & flag::BODY_CRC_ABSENT == 0 {
            return Err(HeaderError::ConflictingFlags {
                flags: meta.flags,
                reason: "a body sealed by length alone must be without its checksum",
            });
        }
        Self::sealed(meta, ext, body_len, crc32c::crc32c(ext))
    }

    fn sealed(meta: &FrameMeta, ext: &[u8], body_len: u64, crc: u32) -> Result<Self, HeaderError> {
        let too_large = || HeaderError::FrameTooLarge {
            frame_len: (HEADER_LEN + ext.len()) as u64 + body_len,
            frame_len_max: u32::MAX as usize,
        };
        let ext_len = u32::try_from(ext.len()).map_err(|_| too_large())?;
        let body_len = u32::try_from(body_len).map_err(|_| too_large())?;
        let mut header = Self {
            magic: MAGIC,
            version: VERSION,
            flags: meta.flags,
            command: meta.command,
            request_id: meta.request_id,
            status: meta.status,
            reserved: [0; 6],
            ext_len,
            body_len,
            header_crc32c: 0,
            body_crc32c: crc,
        };
        header.header_crc32c = header.compute_header_crc();
        header.validate(&FrameLimits::UNLIMITED)?;
        Ok(header)
    }

    /// The command, if this build knows it.
    pub fn command(&self) -> Result<Command, UnknownCommand> {
        Command::try_from(self.command)
    }

    /// The status, if this build knows it.
    pub fn status(&self) -> Result<Status, UnknownStatus> {
        Status::try_from(self.status)
    }
}

/// The flag rules: exactly one direction, oneway only on requests, and the body checksum
/// omitted only where the body checks itself.
fn check_flags(flags: u8, command: u16) -> Result<(), HeaderError> {
    let unknown = flags & !flag::KNOWN;
    if unknown != 0 {
        return Err(HeaderError::UnknownFlags { flags, unknown });
    }
    let conflict = |reason| Err(HeaderError::ConflictingFlags { flags, reason });
    let request = flags & flag::REQUEST != 0;
    if request == (flags & flag::RESPONSE != 0) {
        return conflict("exactly one of REQUEST and RESPONSE must be set");
    }
    if flags & flag::ONEWAY != 0 && !request {
        return conflict("ONEWAY is only valid on requests");
    }
    if flags & flag::FAILURES_ONLY != 0 && (!request || flags & flag::ONEWAY != 0) {
        return conflict("FAILURES_ONLY is only valid on requests that are not ONEWAY");
    }
    // Unknown commands are let through so the receiver can answer "unknown command" by id.
    let checks_itself = Command::try_from(command).map_or(true, |c| {
        c.carries_record_batch() || (!request && c.answer_carries_record_batches())
    });
    if flags & flag::BODY_CRC_ABSENT != 0 && !checks_itself {
        return conflict("BODY_CRC_ABSENT is only valid for commands carrying record batches");
    }
    Ok(())
}

/// The header fields a sender chooses; lengths and checksums are filled in by
/// [`FrameHeader::seal`] and [`encode_frame`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameMeta {
    /// A [`Command`] code.
    pub command: u16,
    /// Bits from [`flag`].
    pub flags: u8,
    /// Correlation id.
    pub request_id: u64,
    /// A [`Status`] code; zero on requests.
    pub status: u16,
}

impl FrameMeta {
    /// A request expecting a response.
    pub fn request(command: Command, request_id: u64) -> Self {
        Self {
            command: command.code(),
            flags: flag::REQUEST,
            request_id,
            status: 0,
        }
    }

    /// A request expecting no response.
    pub fn oneway(command: Command, request_id: u64) -> Self {
        Self {
            flags: flag::REQUEST | flag::ONEWAY,
            ..Self::request(command, request_id)
        }
    }

    /// The response to `request`: echoes its command and request id.
    pub fn response(request: &FrameHeader, status: Status) -> Self {
        Self {
            command: request.command,
            flags: flag::RESPONSE,
            request_id: request.request_id,
            status: status.code(),
        }
    }

    /// Omits the body from the body checksum; for record batches, which carry their own.
    pub fn without_body_crc(self) -> Self {
        Self {
            flags: self.flags | flag::BODY_CRC_ABSENT,
            ..self
        }
    }

    /// This request, answered only if it fails ([`flag::FAILURES_ONLY`]).
    pub fn failures_only(self) -> Self {
        Self {
            flags: self.flags | flag::FAILURES_ONLY,
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_rules_are_enforced_with_reasons() {
        let mut meta = FrameMeta::request(Command::CreateTopic, 1);
        meta.flags |= flag::RESPONSE;
        let err = FrameHeader::seal(&meta, &[], &[]).unwrap_err();
        assert!(matches!(err, HeaderError::ConflictingFlags { .. }), "{err}");
        let meta = FrameMeta::request(Command::CreateTopic, 1).without_body_crc();
        let err = FrameHeader::seal(&meta, &[], &[]).unwrap_err();
        assert!(err.to_string().contains("record batches"), "{err}");
        assert!(FrameHeader::seal(&meta.without_body_crc(), &[], &[]).is_err());
        let meta = FrameMeta::request(Command::Produce, 1).without_body_crc();
        assert!(FrameHeader::seal(&meta, &[], &[]).is_ok());
        let mut meta = FrameMeta::request(Command::Produce, 1);
        meta.flags |= 0x80;
        assert_eq!(
            FrameHeader::seal(&meta, &[], &[]),
            Err(HeaderError::UnknownFlags {
                flags: 0x81,
                unknown: 0x80
            })
        );
        let meta = FrameMeta::request(Command::Reply, 1).failures_only();
        assert!(FrameHeader::seal(&meta.without_body_crc(), &[], &[]).is_ok());
        let meta = FrameMeta::oneway(Command::Reply, 1).failures_only();
        let err = FrameHeader::seal(&meta, &[], &[]).unwrap_err();
        assert!(err.to_string().contains("FAILURES_ONLY"), "{err}");
        let mut meta = FrameMeta::request(Command::Produce, 1);
        meta.status = 7;
        assert!(FrameHeader::seal(&meta, &[], &[]).is_err());
        assert_eq!(
            FrameHeader::seal(&FrameMeta::request(Command::Produce, 1), &[0; 3], &[]),
            Err(HeaderError::ExtMisaligned { ext_len: 3 })
        );
    }
}
