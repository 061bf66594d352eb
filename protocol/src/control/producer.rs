//! The idempotent producer's control body (`docs/ARCHITECTURE.md` §13.1): the id a broker
//! assigns. The sequence numbers travel in the batches themselves (record format version 3).

use rkyv::{Archive, Deserialize, Serialize};

/// Broker → producer: the answer to `InitProducer`.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct InitProducerReply {
    /// The producer id: never 0, never handed out twice in the cluster (the assigning
    /// broker's id hash in the high 32 bits, a durable counter in the low 32).
    pub producer_id: u64,
}
