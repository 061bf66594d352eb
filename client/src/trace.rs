//! W3C Trace Context on messages (`docs/ARCHITECTURE.md` §12): the types, new traces and
//! child spans.
//!
//! A message carries a context only when it is given one ([`crate::Message::with_trace`],
//! [`crate::Message::with_new_trace`]): nothing is generated for messages without it, and such
//! a message costs no byte more. A consumer, responder or requester finds the context
//! unchanged in [`crate::ReceivedMessage::trace`]. A reply carries the context its responder
//! gives ([`crate::Answer::with_trace`]: the request's trace id with the responder's own span
//! id, see [`child_of`]), and otherwise the request's own context unchanged: a responder that
//! records no span must not invent a parent id naming a span nobody recorded, and a context
//! passed on unchanged keeps its `tracestate` as W3C asks.

pub use protocol::trace::{TraceContext, TraceContextError, TraceParent, TraceState};

/// A new trace: random trace id and span id, flags `01` (sampled: the sender asks the
/// tracers downstream to record their spans).
pub fn new_trace() -> TraceContext {
    loop {
        // All-zero ids are invalid; a retry is needed once in 2^64 draws.
        if let Ok(parent) = TraceParent::new(
            rand::random(),
            rand::random(),
            protocol::trace::FLAG_SAMPLED,
        ) {
            return TraceContext::new(parent);
        }
    }
}

/// The context a participant passes on once it records a span of its own: the same trace,
/// flags and `tracestate`, with a new random span id as the parent id.
pub fn child_of(context: &TraceContext) -> TraceContext {
    loop {
        if let Ok(parent) = context.parent.with_parent_id(rand::random()) {
            return TraceContext {
                parent,
                state: context.state.clone(),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_traces_are_distinct_and_children_keep_the_trace() {
        let (a, b) = (new_trace(), new_trace());
        assert_ne!(a.parent.trace_id(), b.parent.trace_id());
        assert!(a.parent.sampled());
        let mut with_state = a.clone();
        with_state.state = Some(TraceState::parse("rojo=1").unwrap());
        let child = child_of(&with_state);
        assert_eq!(child.parent.trace_id(), a.parent.trace_id());
        assert_ne!(child.parent.parent_id(), a.parent.parent_id());
        assert_eq!(child.state, with_state.state);
        assert_eq!(child.parent.flags(), a.parent.flags());
    }
}
