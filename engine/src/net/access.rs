//! Who a connection is and what it may do: authentication by token (`Authenticate`) and the
//! check of every request against the policy, before the request is served or forwarded to
//! another shard (`docs/ARCHITECTURE.md` §9).
//!
//! | command | action | resource |
//! |---|---|---|
//! | `Produce` | `produce` | the batch's topic |
//! | `Request` | `request` | the batch's topic |
//! | `Reply` | `respond` | the batch's topic (the request's) |
//! | `Subscribe`, `FetchOffset` | `consume` | topic, with the group |
//! | `TraceMessage` | `consume` | topic, with group `*`: a trace shows every group, so the grant must cover them all |
//! | `CreateTopic`, `UpdateTopic`, `DeleteTopic`, `ScrubLogs` | `admin_topic` | the topic (`*` for a scrub of every queue) |
//! | `ReplicaFetch` | `broker` | the follower's broker id |
//! | `ReplicaEpochEnd`, `QueueRole` | `broker` | this broker's id |
//! | anything else | none | any authenticated caller |
//!
//! `Credit`, `Unsubscribe` and `CommitOffset` act on a subscription the connection made, which
//! was checked when it was made. Frames forwarded between shards were checked where they
//! arrived.

use auth::Action;
use protocol::codes::{Command, Status};
use protocol::control::{
    self, Authenticate, Authenticated, FetchOffset, ReplicaFetch, ScrubRequest, Subscribe,
    TopicConfig, TopicName,
};
use protocol::data::BatchAddress;
use protocol::frame::{FrameHeader, FrameMut};

use super::conn::Conn;
use crate::error::Reject;
use crate::shard::Shard;

/// Why a request is not served.
pub(crate) struct Refusal {
    pub reject: Reject,
    /// The connection is closed after the answer (it never authenticated).
    pub close: bool,
}

impl From<Reject> for Refusal {
    fn from(reject: Reject) -> Self {
        Self {
            reject,
            close: false,
        }
    }
}

/// `Authenticate`: the connection takes the token's principal, or is refused and closed.
/// With security off any token is taken, as `anonymous`.
pub(crate) fn authenticate(
    shard: &Shard,
    conn: &Conn,
    frame: &FrameMut,
) -> Result<Vec<u8>, Refusal> {
    let request: Authenticate = control::decode(&frame.body).map_err(Reject::from)?;
    let authority = shard.security.authority();
    let session = authority
        .authenticate(&request.token, conn.peer())
        .map_err(|e| Refusal {
            reject: Reject::new(Status::Unauthenticated, e.to_string()),
            close: true,
        })?;
    log::debug!(
        "shard {}: connection {} from {} authenticated as {}",
        shard.id,
        conn.id,
        conn.peer(),
        session.principal
    );
    let reply = Authenticated {
        principal: session.principal.clone(),
        expires_at_ms: session.expires_at_ms,
    };
    conn.authenticated(session, authority.version());
    Ok(control::encode(&reply).map_err(Reject::from)?)
}

/// Checks that `conn` may send `frame` (of `command`); see the module table.
pub(crate) fn authorize(
    shard: &Shard,
    conn: &Conn,
    command: Command,
    frame: &FrameMut,
) -> Result<(), Refusal> {
    let security = &shard.security;
    if !security.is_enabled() {
        return Ok(());
    }
    let Some(principal) = conn.principal() else {
        security
            .authority()
            .refuse_unauthenticated(conn.peer(), command.name());
        return Err(Refusal {
            reject: Reject::new(
                Status::Unauthenticated,
                format!(
                    "the broker requires authentication before {}: {}",
                    command.name(),
                    auth::AuthError::Missing
                ),
            ),
            close: true,
        });
    };
    if let Some(reason) = conn.lapsed(security.authority()) {
        security
            .authority()
            .refuse_unauthenticated(conn.peer(), command.name());
        return Err(Refusal {
            reject: Reject::new(
                Status::Unauthenticated,
                format!("{reason}: authenticate again"),
            ),
            close: true,
        });
    }
    let Some((action, resource, group)) = what(shard, command, frame)? else {
        return Ok(());
    };
    conn.check(
        security.authority(),
        &principal,
        action,
        &resource,
        group.as_deref(),
    )
    .map_err(|denial| Reject::new(Status::PermissionDenied, denial.to_string()))?;
    if action == Action::AdminTopic {
        conn.admin_requested(frame.header.request_id, action, resource);
    }
    Ok(())
}

/// Audits the answer to an admin request of `conn` relayed from the shard that served it
/// (`response`, encoded), if it answers one (security on).
pub(crate) fn audit_answer(shard: &Shard, conn: &Conn, response: &[u8]) {
    if !shard.security.is_enabled() {
        return;
    }
    let Ok(header) = FrameHeader::decode(response) else {
        return;
    };
    let outcome = if header.status == Status::Ok.code() {
        Ok(())
    } else {
        let body_at = protocol::frame::HEADER_LEN + header.ext_len as usize;
        Err(response
            .get(body_at..)
            .and_then(|body| control::decode::<control::ErrorReply>(body).ok())
            .map_or_else(|| format!("status {}", header.status), |e| e.message))
    };
    audit_admin(shard, conn, &header, outcome);
}

/// Audits the answer to an admin request of `conn` served on this shard, if `header` is
/// one (security on).
pub(crate) fn audit_result<T>(
    shard: &Shard,
    conn: &Conn,
    header: &FrameHeader,
    result: &Result<T, Reject>,
) {
    if !shard.security.is_enabled() {
        return;
    }
    let outcome = result.as_ref().map(drop).map_err(|r| r.message.clone());
    audit_admin(shard, conn, header, outcome);
}

/// One audit record: who ran which admin command on which topic, and how it ended.
fn audit_admin(shard: &Shard, conn: &Conn, header: &FrameHeader, outcome: Result<(), String>) {
    let Some((_, resource)) = conn.admin_answered(header.request_id) else {
        return;
    };
    let Some(audit) = shard.security.authority().audit() else {
        return;
    };
    let command = header.command().map_or("admin", Command::name);
    let (outcome, detail) = match outcome {
        Ok(()) => (auth::Outcome::Ok, String::new()),
        Err(detail) => (auth::Outcome::Failed, detail),
    };
    let principal = conn.principal();
    audit.record(
        principal.as_deref(),
        conn.peer(),
        command,
        &resource,
        outcome,
        &detail,
    );
}

/// The action a request is, on which resource (and group); `None` for requests any
/// authenticated caller may make.
fn what(
    shard: &Shard,
    command: Command,
    frame: &FrameMut,
) -> Result<Option<(Action, String, Option<String>)>, Reject> {
    let topic_of_batch = |action| -> Result<_, Reject> {
        let address = BatchAddress::decode(&frame.ext)?;
        Ok(Some((action, address.topic.to_owned(), None)))
    };
    let own_id = || shard.config.broker_id.clone();
    Ok(match command {
        Command::Produce => topic_of_batch(Action::Produce)?,
        Command::Request => topic_of_batch(Action::Request)?,
        Command::Reply => topic_of_batch(Action::Respond)?,
        Command::Subscribe => {
            let request: Subscribe = control::decode(&frame.body)?;
            Some((Action::Consume, request.topic, Some(request.group)))
        }
        Command::FetchOffset => {
            let request: FetchOffset = control::decode(&frame.body)?;
            Some((Action::Consume, request.topic, Some(request.group)))
        }
        Command::TraceMessage => {
            let request: control::TraceRequest = control::decode(&frame.body)?;
            let group = crate::trace::TRACE_GROUP.to_owned();
            Some((Action::Consume, request.topic, Some(group)))
        }
        // Held messages: cancelling or deciding one is the producer's act on its topic.
        Command::CancelHeld => {
            let id: control::HeldRef = control::decode(&frame.body)?;
            Some((Action::Produce, id.topic, None))
        }
        Command::EndTransaction => {
            let end: control::EndTransaction = control::decode(&frame.body)?;
            Some((Action::Produce, end.id.topic, None))
        }
        Command::HeldStats => {
            let request: control::HeldStatsRequest = control::decode(&frame.body)?;
            Some((Action::AdminTopic, request.topic, None))
        }
        Command::CreateTopic | Command::UpdateTopic => {
            let config: TopicConfig = control::decode(&frame.body)?;
            Some((Action::AdminTopic, config.topic, None))
        }
        Command::DeleteTopic => {
            let request: TopicName = control::decode(&frame.body)?;
            Some((Action::AdminTopic, request.topic, None))
        }
        Command::DeadLetterShow | Command::DeadLetterResend | Command::DeadLetterPurge => {
            let request: control::DeadLetterRequest = control::decode(&frame.body)?;
            Some((Action::AdminTopic, request.topic, None))
        }
        Command::ScrubLogs => {
            let request: ScrubRequest = control::decode(&frame.body)?;
            let topic = request.topic.unwrap_or_else(|| "*".to_owned());
            Some((Action::AdminTopic, topic, None))
        }
        Command::ReplicaFetch => {
            let request: ReplicaFetch = control::decode(&frame.body)?;
            Some((Action::Broker, request.replica, None))
        }
        Command::ReplicaEpochEnd | Command::QueueRole => Some((Action::Broker, own_id(), None)),
        _ => None,
    })
}

/// True when `frame_len` bytes may arrive on `conn` now: before a connection authenticated
/// (security on), frames are at most `security.preauth_frame_bytes_max`.
pub(crate) fn frame_allowed(shard: &Shard, conn: &Conn, frame_len: u64) -> bool {
    !shard.security.is_enabled()
        || conn.principal().is_some()
        || frame_len <= u64::from(shard.config.security.preauth_frame_bytes_max)
}
