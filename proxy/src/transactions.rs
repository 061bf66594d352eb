//! The proxy's transactional producers, one per producer group its HTTP callers name
//! (ARCHITECTURE §13.4).
//!
//! An HTTP caller cannot be called back, so the proxy answers the broker's check-backs for
//! these groups with "unknown": a half whose caller never commits or rolls back is asked about
//! `held.checks_max` times, then gets the broker's `held.default_outcome` (rollback unless
//! configured otherwise). Callers should give HTTP halves a producer group of their own: a
//! Rust member of the same group on the same broker might not be the one asked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use client::{Client, TransactionOutcome, TransactionalProducer};

use crate::error::ApiError;

/// The most producer groups the proxy sends halves for: the broker registers at most 64
/// check groups per connection, and the proxy's client has one connection per broker.
pub const GROUPS_MAX: usize = 64;

/// The proxy's transactional producers by group.
#[derive(Default)]
pub struct TxProducers {
    groups: Mutex<HashMap<String, Arc<TransactionalProducer>>>,
    /// Check-backs answered "unknown" (for tests and logs).
    checks: Arc<AtomicU64>,
}

impl TxProducers {
    /// The producer of `group`, created on first use; 400 for a name that is not a group
    /// name, 429 past [`GROUPS_MAX`] groups.
    pub fn of(&self, client: &Client, group: &str) -> Result<Arc<TransactionalProducer>, ApiError> {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(producer) = groups.get(group) {
            return Ok(producer.clone());
        }
        if groups.len() >= GROUPS_MAX {
            return Err(ApiError::too_many(format!(
                "the proxy sends halves for at most {GROUPS_MAX} producer groups"
            )));
        }
        let checks = self.checks.clone();
        let producer = TransactionalProducer::new(client, group, move |half| {
            checks.fetch_add(1, Ordering::Relaxed);
            log::info!(
                "check {} of half {}/{}/{}: unknown (an HTTP producer cannot be asked)",
                half.check,
                half.message.topic,
                half.message.queue_id,
                half.message.offset
            );
            TransactionOutcome::Unknown
        })
        .map_err(|e| match e {
            client::ClientError::InvalidArgument(m) => {
                ApiError::bad_request(format!("producer_group: {m}"))
            }
            other => ApiError::from(other),
        })?;
        let producer = Arc::new(producer);
        groups.insert(group.to_owned(), producer.clone());
        Ok(producer)
    }

    /// How many check-backs the proxy answered "unknown".
    pub fn checks_answered(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }
}
