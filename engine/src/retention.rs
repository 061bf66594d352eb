//! Retention on a timer: each shard deletes whole old segments of the queues it owns, as
//! their topic's `retention_bytes` and `retention_age_ms` say.
//!
//! The log only deletes sealed segments, so the data a consumer is reading near the tail is
//! never at risk; a consumer whose position falls below the new start offset resumes at it.

use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::shard::Shard;

/// Runs retention passes every `storage.retention_check_interval_ms` until dropped.
pub(crate) async fn run(shard: Rc<Shard>) {
    let period = Duration::from_millis(shard.config.storage.retention_check_interval_ms);
    loop {
        crate::rt::sleep(period).await;
        pass(&shard).await;
    }
}

/// One pass over every queue this shard owns.
async fn pass(shard: &Shard) {
    let queues = shard.topics.queues();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    for queue in queues {
        match queue.log.apply_retention(now_ms).await {
            Ok(report) if report.segments_removed > 0 => log::info!(
                "shard {}: retention removed {} segments ({} bytes) of {}/{}; it now starts at offset {}",
                shard.id,
                report.segments_removed,
                report.bytes_removed,
                queue.topic,
                queue.id,
                report.start_offset
            ),
            Ok(_) => {}
            // The next pass tries again; the log keeps serving what it still holds.
            Err(e) => log::warn!(
                "shard {}: retention of {}/{} failed: {e}",
                shard.id,
                queue.topic,
                queue.id
            ),
        }
    }
}
