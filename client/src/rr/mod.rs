//! Request-reply (DESIGN §5): the requester sends a request record carrying its client id as
//! `reply_to`, a unique correlation id and a deadline; a responder consumes it and answers on
//! the broker that pushed it; that broker pushes the reply to the requester's connection.
//!
//! - `requester`: a request is a send through the one pipeline (`crate::send`) that
//!   registers for its reply first and waits for it;
//! - `replies`: the registry of awaited replies by correlation id, fed by reply pushes;
//! - `responder`: consumes requests and answers them, handler threaded or inline;
//! - `replier`: answers a request later, by its address.

mod replier;
pub(crate) mod replies;
mod requester;
mod responder;

pub use replier::{Answer, Replier, ReplyAddress};
pub use requester::{ReplyFuture, Requester};
pub use responder::{Responder, ResponderOptions};
