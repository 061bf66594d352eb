//! What went wrong for a consumer outside any call it made: a broker that cannot serve one of
//! its queues (damaged stored data) or a push it could not read. Each is logged and kept until
//! the application takes it (from `recv`, `take_error` or `close`), so a consumer never just
//! stops receiving, or loses a message, without being told.

use std::collections::VecDeque;
use std::sync::PoisonError;

use protocol::codes::Status;
use protocol::control::{self, ErrorReply};
use protocol::frame::FrameBytes;

use super::ConsumerInner;
use crate::error::ClientError;

/// Faults kept while nobody takes them; older ones are dropped past this (and counted).
const FAULTS_KEPT_MAX: usize = 64;

/// Faults not yet taken by the application.
#[derive(Default)]
pub(super) struct Faults {
    pending: VecDeque<(Status, String)>,
    dropped: u64,
}

impl ConsumerInner {
    /// Records a fault, logs it, and wakes a waiting `recv`.
    pub(super) fn fault(&self, status: Status, message: String) {
        log::error!(
            "consumer of {} (group {}): {status}: {message}",
            self.options.topic,
            self.options.group
        );
        {
            let mut faults = self.faults.lock().unwrap_or_else(PoisonError::into_inner);
            if faults.pending.len() == FAULTS_KEPT_MAX {
                faults.pending.pop_front();
                faults.dropped += 1;
            }
            faults.pending.push_back((status, message));
        }
        // An empty batch wakes `recv` without delivering anything.
        if let Some(deliveries) = self
            .deliveries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            let _ = deliveries.send(Vec::new());
        }
    }

    /// The oldest fault not yet taken, as the error the application sees.
    pub(super) fn take_fault(&self) -> Option<ClientError> {
        let mut faults = self.faults.lock().unwrap_or_else(PoisonError::into_inner);
        let Some((status, mut message)) = faults.pending.pop_front() else {
            drop(faults);
            // The retry topic's consumer reports through its parent.
            return self.retry.as_ref().and_then(|retry| retry.take_fault());
        };
        if faults.dropped > 0 {
            message.push_str(&format!(" ({} older faults were dropped)", faults.dropped));
            faults.dropped = 0;
        }
        Some(ClientError::Status { status, message })
    }

    /// A `PushFault`: the broker cannot serve one of the subscription's queues.
    pub(super) fn on_push_fault(&self, endpoint: &str, frame: &FrameBytes) {
        match control::decode::<ErrorReply>(&frame.body) {
            Ok(reply) => {
                let status = Status::try_from(reply.status).unwrap_or(Status::Internal);
                self.fault(status, format!("{endpoint}: {}", reply.message));
            }
            Err(e) => self.fault(
                Status::Internal,
                format!("{endpoint}: a queue cannot be served (unreadable fault body: {e})"),
            ),
        }
    }
}
