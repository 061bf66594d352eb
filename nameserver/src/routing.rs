//! Which shard of a broker owns a queue.
//!
//! A broker runs one shard per core and each queue is owned by exactly one of them; a route
//! names the owner's port so that a shard-aware client connects straight to it. The broker
//! and the nameserver must agree on the mapping bit for bit, so it is defined once, here,
//! over plain bytes: FNV-1a (64-bit) of the topic's UTF-8 bytes followed by the queue id as a
//! little-endian `u32`, modulo the shard count.
//!
//! This belongs in `protocol` beside the other cross-process contracts; it lives here until
//! it moves there, and the pinned values in the tests below must move with it unchanged.

/// FNV-1a 64-bit offset basis.
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64-bit hash of `bytes`, continuing from `hash`.
const fn fnv1a64_append(mut hash: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    hash
}

/// FNV-1a 64-bit hash of `topic`'s bytes then `queue_id` as a little-endian `u32`.
pub fn queue_hash(topic: &str, queue_id: u32) -> u64 {
    let hash = fnv1a64_append(FNV_OFFSET_BASIS, topic.as_bytes());
    fnv1a64_append(hash, &queue_id.to_le_bytes())
}

/// The index of the shard that owns queue `queue_id` of `topic` on a broker with
/// `shard_count` shards: `queue_hash(topic, queue_id) % shard_count`.
///
/// A broker has at least one shard (registrations are validated so); a `shard_count` of zero
/// is answered as if it were one, rather than dividing by zero.
pub fn queue_shard(topic: &str, queue_id: u32, shard_count: usize) -> usize {
    let shards = shard_count.max(1) as u64;
    // The remainder is below `shard_count`, so it fits a `usize`.
    (queue_hash(topic, queue_id) % shards) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_published_test_vectors() {
        assert_eq!(fnv1a64_append(FNV_OFFSET_BASIS, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(
            fnv1a64_append(FNV_OFFSET_BASIS, b"a"),
            0xaf63_dc4c_8601_ec8c
        );
        assert_eq!(
            fnv1a64_append(FNV_OFFSET_BASIS, b"foobar"),
            0x8594_4171_f739_67e8
        );
    }

    #[test]
    fn queue_hash_covers_topic_then_queue_id_le() {
        let mut bytes = b"A10-20190001".to_vec();
        bytes.extend_from_slice(&7u32.to_le_bytes());
        assert_eq!(
            queue_hash("A10-20190001", 7),
            fnv1a64_append(FNV_OFFSET_BASIS, &bytes)
        );
    }

    /// Pinned values: the broker computes the same mapping, so a change here is a wire change.
    #[test]
    fn pinned_queue_shards() {
        let pinned: &[(&str, u32, usize, u64, usize)] = &[
            ("A10-20190001", 0, 4, 0xe02d_9e23_0bd6_e01b, 3),
            ("A10-20190001", 1, 4, 0x4032_f21a_b5a1_238a, 2),
            ("A10-20190001", 7, 3, 0x8028_4a2b_620c_9cac, 0),
            ("SZ1-orders", 3, 8, 0x72f5_d5b9_1955_75e8, 0),
            ("A10-1", 0, 2, 0xcc65_2606_7234_d20b, 1),
        ];
        for &(topic, queue_id, shards, hash, shard) in pinned {
            assert_eq!(queue_hash(topic, queue_id), hash, "{topic}/{queue_id}");
            assert_eq!(
                queue_shard(topic, queue_id, shards),
                shard,
                "{topic}/{queue_id}"
            );
        }
    }

    #[test]
    fn every_shard_is_in_range_and_zero_shards_means_one() {
        for queue_id in 0..64 {
            assert!(queue_shard("A10-1", queue_id, 3) < 3);
            assert_eq!(queue_shard("A10-1", queue_id, 0), 0);
            assert_eq!(queue_shard("A10-1", queue_id, 1), 0);
        }
    }
}
