//! The receive side of one connection: its buffer, the frame deadline and the reservation a
//! large frame holds while it arrives. It keeps a connection's memory to what its current
//! frame needs: the buffer grows to a frame's announced length only (never by doubling), a
//! frame above [`PARTIAL_FRAME_ALLOWANCE`] must first reserve that length from the server's
//! budget, and once a grown frame is answered the buffer goes back to its initial size, so no
//! connection keeps a large frame's capacity while idle.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::admission::Reservation;
use crate::limits::PARTIAL_FRAME_ALLOWANCE;

/// Initial receive buffer; control requests are small, and the buffer grows to a larger
/// frame's length once its header says how large.
pub(crate) const READ_BUF_INITIAL: usize = 4 << 10;

pub(crate) struct Inbound {
    /// Declared before `reservation`, so a closing connection frees its buffer before it
    /// returns the reservation (whose release trims the heap).
    pub(crate) buf: BytesMut,
    /// The buffer was grown past [`READ_BUF_INITIAL`] for the frame at its start.
    grown: bool,
    reservation: Option<Reservation>,
    /// When the frame being received must be complete; `None` between frames, where only the
    /// idle timeout applies.
    deadline: Option<Instant>,
}

impl Inbound {
    /// A new connection's: its first frame is due by `first_frame_deadline`, so a connection
    /// that never sends one cannot hold its slot past it.
    pub(crate) fn new(first_frame_deadline: Instant) -> Self {
        Self {
            buf: BytesMut::with_capacity(READ_BUF_INITIAL),
            grown: false,
            reservation: None,
            deadline: Some(first_frame_deadline),
        }
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Bytes arrived at `now`: into an empty buffer between frames, they start a frame, whose
    /// deadline starts with them.
    pub(crate) fn received(&mut self, now: Instant, frame_timeout: Duration) {
        if self.deadline.is_none() && !self.buf.is_empty() {
            self.deadline = Some(now + frame_timeout);
        }
    }

    /// One or more frames were split off and answered at `now`: shrink a grown buffer, return
    /// the reservation, and restart the deadline for the partial frame left, if any.
    pub(crate) fn frames_answered(&mut self, now: Instant, frame_timeout: Duration) {
        if self.grown {
            // The grown allocation is shared with the split-off frame; a fresh buffer holding
            // the (few) bytes left lets it be freed.
            let mut small = BytesMut::with_capacity(READ_BUF_INITIAL.max(self.buf.len()));
            small.extend_from_slice(&self.buf);
            self.buf = small;
            self.grown = false;
        }
        self.reservation = None;
        self.deadline = (!self.buf.is_empty()).then(|| now + frame_timeout);
    }

    /// Whether the frame of `needed` bytes at the start of the buffer must reserve from the
    /// budget before more of it is read.
    pub(crate) fn needs_reservation(&self, needed: usize) -> bool {
        needed > PARTIAL_FRAME_ALLOWANCE && self.reservation.is_none()
    }

    pub(crate) fn reserved(&mut self, reservation: Reservation) {
        self.reservation = Some(reservation);
    }

    /// Makes room to read up to `needed` bytes in all, the frame at the start of the buffer
    /// (or its header): exactly that much when the buffer must grow, so a reservation covers
    /// the allocation. Leaves room to read (`needed` exceeds what is buffered).
    pub(crate) fn make_room(&mut self, needed: usize) {
        if needed <= self.buf.capacity() {
            return;
        }
        let capacity = needed.max(READ_BUF_INITIAL);
        let mut grown = BytesMut::with_capacity(capacity);
        grown.extend_from_slice(&self.buf);
        self.buf = grown;
        self.grown = capacity > READ_BUF_INITIAL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grown_buffer_shrinks_once_its_frame_is_answered() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(1);
        let mut inbound = Inbound::new(t0 + timeout);
        assert_eq!(inbound.deadline(), Some(t0 + timeout));
        inbound.buf.extend_from_slice(&[1; 40]);
        inbound.make_room(1 << 20);
        assert_eq!(
            inbound.buf.capacity(),
            1 << 20,
            "grown exactly, not doubled"
        );
        assert!(inbound.needs_reservation(1 << 20));
        assert!(!inbound.needs_reservation(PARTIAL_FRAME_ALLOWANCE));
        inbound.buf.resize(1 << 20, 0);
        let frame = inbound.buf.split_to(1 << 20);
        drop(frame);
        inbound.frames_answered(t0, timeout);
        assert_eq!(inbound.buf.capacity(), READ_BUF_INITIAL);
        assert_eq!(
            inbound.deadline(),
            None,
            "between frames only idling counts"
        );
        inbound.buf.extend_from_slice(&[1]);
        inbound.received(t0 + timeout, timeout);
        assert_eq!(inbound.deadline(), Some(t0 + 2 * timeout));
    }
}
