//! How much of a receive buffer to offer the next socket read.
//!
//! Safe Rust can only read into initialised bytes, so every byte offered to a read is zeroed
//! first. Offering a fixed large chunk zeroes it on every read even when a 300-byte frame
//! arrives: a 256 KiB zero-fill costs more than the rest of a small request's handling. The
//! sizer offers what the frame being received still lacks, or what the stream has lately been
//! delivering per read: a busy stream grows towards the largest chunk (few reads, as before),
//! a request-reply stream stays small (little zeroing).

use super::{FrameError, Framer};

/// The next read's size for one connection; see the module docs.
#[derive(Clone, Copy, Debug)]
pub struct ReadSizer {
    min: usize,
    max: usize,
    /// What recent reads delivered: doubled after a read that filled its offer, shrunk to
    /// the delivered size otherwise.
    hint: usize,
}

impl ReadSizer {
    /// A sizer offering between `min` and `max` bytes (`min` is raised to 1 and `max` to
    /// `min`).
    pub fn new(min: usize, max: usize) -> Self {
        let min = min.max(1);
        let max = max.max(min);
        Self {
            min,
            max,
            hint: min,
        }
    }

    /// Bytes to offer the next read, given the `missing` bytes of the frame being received
    /// (0 when none is known) and the buffer's spare `room`; never more than `room` unless
    /// `room` is zero, when the caller must grow the buffer first.
    pub fn offer(&self, missing: usize, room: usize) -> usize {
        missing.max(self.hint).clamp(self.min, self.max).min(room)
    }

    /// Bytes to offer the next read after `received` (what is buffered and not yet framed,
    /// as `framer` sees it), with the buffer's spare `room`: [`Self::offer`] with what the
    /// frame being received still lacks.
    pub fn offer_after(&self, framer: &Framer, received: &[u8], room: usize) -> usize {
        let missing = match framer.check(received) {
            Err(FrameError::Incomplete { needed }) => needed.saturating_sub(received.len()),
            _ => 0,
        };
        self.offer(missing, room)
    }

    /// Records that a read offered `offered` bytes delivered `read`.
    pub fn observe(&mut self, offered: usize, read: usize) {
        self.hint = if read >= offered {
            self.hint.saturating_mul(2).min(self.max)
        } else {
            read.clamp(self.min, self.max)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_exchanges_stay_small_and_bulk_grows_to_the_largest_chunk() {
        let mut sizer = ReadSizer::new(4096, 256 << 10);
        assert_eq!(sizer.offer(40, usize::MAX), 4096, "a header is awaited");
        sizer.observe(4096, 300);
        assert_eq!(sizer.offer(0, usize::MAX), 4096);
        // A frame known to lack 100 KiB is offered at once, whatever the history.
        assert_eq!(sizer.offer(100 << 10, usize::MAX), 100 << 10);
        for _ in 0..10 {
            let offered = sizer.offer(0, usize::MAX);
            sizer.observe(offered, offered);
        }
        assert_eq!(
            sizer.offer(0, usize::MAX),
            256 << 10,
            "full reads grow the offer"
        );
        assert_eq!(sizer.offer(0, 1000), 1000, "never past the room");
        sizer.observe(256 << 10, 10);
        assert_eq!(
            sizer.offer(0, usize::MAX),
            4096,
            "a short read shrinks it back"
        );
    }

    #[test]
    fn a_partly_received_frame_is_offered_what_it_lacks() {
        use crate::codes::Command;
        use crate::frame::{FrameMeta, encode_frame};
        let sizer = ReadSizer::new(4096, 256 << 10);
        let framer = Framer::default();
        let mut frame = Vec::new();
        let body = vec![7u8; 100 << 10];
        encode_frame(
            &FrameMeta::request(Command::Stats, 1),
            &[],
            &body,
            &mut frame,
        )
        .unwrap();
        let lacking = frame.len() - 1000;
        assert_eq!(
            sizer.offer_after(&framer, &frame[..1000], usize::MAX),
            lacking
        );
        assert_eq!(
            sizer.offer_after(&framer, &frame[..10], usize::MAX),
            4096,
            "header first"
        );
        assert_eq!(
            sizer.offer_after(&framer, &frame, usize::MAX),
            4096,
            "nothing lacking"
        );
    }
}
