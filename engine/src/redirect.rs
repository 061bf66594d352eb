//! Dark launch (DESIGN §6): a topic's redirect rules send messages tagged with a rule's flag
//! only to queues consumed by the instances the rule selects.
//!
//! A producer picks a queue as usual; the shard owning it looks at the batch only when the
//! topic has rules. When a record carries a rule's flag, the batch is appended to a queue that
//! a selected instance of the rule's group holds: the addressed queue if it qualifies, else
//! another of this shard's, else one of another shard of this broker (the frame is
//! re-addressed and forwarded there). When no queue of the broker qualifies, the produce is
//! refused with `NoRedirectTarget`; producers retry another broker without isolating the
//! queue, which is healthy. A batch mixing flagged and unflagged records moves whole:
//! unflagged messages may reach a selected instance, flagged ones never reach another.

use std::rc::Rc;

use bytes::Bytes;
use protocol::codes::Status;
use protocol::control::RedirectRule;
use protocol::data::BatchAddress;
use protocol::frame::{FrameBytes, FrameHeader};
use protocol::record::BatchView;

use crate::error::Reject;
use crate::group::GroupKey;
use crate::mesh::{self, MeshMsg, MeshReply};
use crate::shard::Shard;

/// Where a flagged batch goes.
pub(crate) enum Target {
    /// Queue `id` of this shard.
    Here(u32),
    /// Queue `.1`, owned by shard `.0`: the frame is re-addressed and forwarded there.
    Elsewhere(usize, u32),
}

/// The rule whose flag a record of `batch` carries as its tag, if any.
pub(crate) fn matching_rule<'r>(
    rules: &'r [RedirectRule],
    batch: &[u8],
    batch_len_max: usize,
) -> Option<&'r RedirectRule> {
    let view = BatchView::parse(batch, batch_len_max).ok()?;
    view.records()
        .filter_map(|record| record.tag())
        .find_map(|tag| rules.iter().find(|rule| rule.flag == tag))
}

/// The writable queues of `topic` on this shard that an instance selected by `rule` holds.
pub(crate) fn local_targets(shard: &Shard, topic: &str, rule: &RedirectRule) -> Vec<u32> {
    let writable = shard
        .topics
        .with_config(topic, |c| c.write_queue_count)
        .unwrap_or(0);
    let key = GroupKey {
        topic: topic.to_owned(),
        group: rule.group.clone(),
    };
    let mut queues = shard
        .consumption
        .queues_held(&key, |client_id| rule.selects(client_id));
    queues.retain(|&queue_id| queue_id < writable);
    queues
}

/// Where the batch of `frame`, addressed to `queue_id` of `topic` on this shard, goes under
/// `rule`. A frame forwarded by another shard is not forwarded again, so a rebalance racing
/// the forward ends in a refusal the producer retries, never in a loop.
pub(crate) async fn target(
    shard: &Rc<Shard>,
    topic: &str,
    queue_id: u32,
    rule: &RedirectRule,
    forwarded: bool,
) -> Result<Target, Reject> {
    let here = local_targets(shard, topic, rule);
    if here.contains(&queue_id) {
        return Ok(Target::Here(queue_id));
    }
    if let Some(&other) = here.first() {
        return Ok(Target::Here(other));
    }
    if !forwarded {
        let replies = mesh::call_all(shard, |token| MeshMsg::RedirectQuery {
            origin: shard.id,
            token,
            topic: topic.to_owned(),
            rule: rule.clone(),
        })
        .await;
        let found = replies.into_iter().find_map(|reply| match reply {
            MeshReply::RedirectTargets { shard, queues } => Some((shard, *queues.first()?)),
            _ => None,
        });
        if let Some((owner, other)) = found {
            return Ok(Target::Elsewhere(owner, other));
        }
    }
    Err(Reject::new(
        Status::NoRedirectTarget,
        format!(
            "{topic}: a message tagged {:?} may only go to instances {:?} of group {}, and \
             none of them consumes a queue on broker {}",
            rule.flag, rule.instances, rule.group, shard.config.broker_id
        ),
    ))
}

/// A produce frame with `header` and `body`, addressed to `queue_id` of `topic`. It only
/// travels the in-process mesh, where nothing checks the header's checksum again; its
/// extension length is kept true.
pub(crate) fn readdress(
    header: FrameHeader,
    topic: &str,
    queue_id: u32,
    body: Bytes,
) -> Result<FrameBytes, Reject> {
    let mut ext = Vec::new();
    BatchAddress::new(topic, queue_id)
        .encode(&mut ext)
        .map_err(|e| Reject::new(Status::InvalidArgument, e.to_string()))?;
    let mut header = header;
    header.ext_len = ext.len() as u32;
    Ok(FrameBytes {
        header,
        ext: Bytes::from(ext),
        body,
    })
}
