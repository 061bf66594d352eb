//! The log file: round trips through reopen, truncate, purge, torn tails and damage.

use std::io::Write;

use openraft::testing::log_id;
use openraft::{EntryPayload, RaftLogReader};

use super::*;
use crate::state::Command;

fn entry(index: u64) -> Entry {
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(Command::DeleteTopic {
            topic: format!("t{index}"),
        }),
    }
}

fn indexes(store: &LogStore) -> Vec<u64> {
    store.reader.lock().by_index.keys().copied().collect()
}

fn log_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join(LOG_FILE)).unwrap().len()
}

/// A store in a fresh directory with entries 0..count.
fn store_with(count: u64) -> (tempfile::TempDir, LogStore) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open(dir.path()).unwrap();
    store
        .append_records((0..count).map(entry).collect())
        .unwrap();
    (dir, store)
}

#[tokio::test]
async fn entries_vote_and_committed_survive_a_reopen() {
    let (dir, mut store) = store_with(3);
    let vote = Vote::new_committed(2, 1);
    store.save_vote(&vote).await.unwrap();
    store.save_committed(Some(log_id(1, 1, 1))).await.unwrap();
    drop(store);

    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&store), [0, 1, 2]);
    assert_eq!(store.read_vote().await.unwrap(), Some(vote));
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 1, 1)));
    let read = store.try_get_log_entries(1..3).await.unwrap();
    assert_eq!(read, [entry(1), entry(2)]);
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 2)));
    assert_eq!(state.last_purged_log_id, None);
}

#[test]
fn a_torn_tail_is_cut_on_reopen_and_appends_go_on_after_it() {
    let (dir, store) = store_with(3);
    let full = log_len(dir.path());
    let third = store.offsets[&2];
    drop(store);
    // The last record lost its last 5 bytes, as a crash mid-append leaves it.
    let file = OpenOptions::new()
        .write(true)
        .open(dir.path().join(LOG_FILE))
        .unwrap();
    file.set_len(full - 5).unwrap();
    drop(file);

    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&store), [0, 1]);
    assert_eq!(
        log_len(dir.path()),
        third,
        "the file is cut where the torn record began"
    );
    store.append_records(vec![entry(2), entry(3)]).unwrap();
    drop(store);
    let store = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&store), [0, 1, 2, 3]);
}

#[test]
fn a_bad_checksum_in_the_last_record_is_a_torn_tail_and_in_the_middle_is_damage() {
    let (dir, store) = store_with(3);
    let (second, third) = (store.offsets[&1], store.offsets[&2]);
    drop(store);
    let path = dir.path().join(LOG_FILE);
    let flip = |at: u64| {
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at as usize] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
    };

    // A body byte of the middle record: valid records follow, so this is no torn append.
    flip(second + RECORD_HEADER_LEN as u64 + 2);
    match LogStore::open(dir.path()) {
        Err(StoreError::Damaged { offset, reason, .. }) => {
            assert_eq!(offset, second);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    flip(second + RECORD_HEADER_LEN as u64 + 2);

    // The same in the last record: cut.
    flip(third + RECORD_HEADER_LEN as u64 + 2);
    let store = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&store), [0, 1]);
    assert_eq!(log_len(dir.path()), third);
}

#[test]
fn a_zero_filled_tail_is_cut() {
    let (dir, store) = store_with(2);
    let full = log_len(dir.path());
    drop(store);
    let mut file = OpenOptions::new()
        .append(true)
        .open(dir.path().join(LOG_FILE))
        .unwrap();
    file.write_all(&[0; 100]).unwrap();
    drop(file);
    let store = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&store), [0, 1]);
    assert_eq!(log_len(dir.path()), full);
}

#[test]
fn a_gap_in_the_indexes_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open(dir.path()).unwrap();
    store.append_records(vec![entry(0), entry(2)]).unwrap();
    let second = store.offsets[&2];
    drop(store);
    match LogStore::open(dir.path()) {
        Err(StoreError::Damaged { offset, reason, .. }) => {
            assert_eq!(offset, second);
            assert_eq!(reason, "entry 2 where entry 1 belongs");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn truncate_and_purge_survive_a_reopen() {
    let (dir, mut store) = store_with(6);
    store.truncate_from(4).unwrap();
    assert_eq!(indexes(&store), [0, 1, 2, 3]);
    store.append_records(vec![entry(4)]).unwrap();
    store.purge_upto(log_id(1, 1, 1)).unwrap();
    assert_eq!(indexes(&store), [2, 3, 4]);
    // Appends after a purge land in the rewritten file.
    store.append_records(vec![entry(5)]).unwrap();
    drop(store);

    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&store), [2, 3, 4, 5]);
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 1)));
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 5)));

    // Purging past the last entry (a snapshot from the leader covers more than the log)
    // leaves an empty log that goes on after the purged id.
    store.purge_upto(log_id(2, 1, 9)).unwrap();
    store.append_records(vec![entry(10)]).unwrap();
    drop(store);
    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&store), [10]);
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 1, 9)));
}

#[test]
fn a_poisoned_store_refuses_writes() {
    let (_dir, mut store) = store_with(1);
    store.poison(&std::io::Error::other("fsync failed"));
    let error = store.check_poisoned().unwrap_err();
    assert!(error.to_string().contains("fsync failed"), "{error}");
}

#[test]
fn golden_bytes_of_the_header_and_a_record() {
    // Golden: a change here breaks every log already on disk.
    assert_eq!(file_header(), b"DFBCLOG1\x01\0\0\0\0\0\0\0");
    let purged = log_id(3, 2, 7);
    let mut out = Vec::new();
    encode_record(&RecordRef::Purged(&purged), &mut out).unwrap();
    let body = br#"{"Purged":{"leader_id":{"term":3,"node_id":2},"index":7}}"#;
    let mut golden = (body.len() as u32).to_le_bytes().to_vec();
    golden.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    golden.extend_from_slice(body);
    assert_eq!(out, golden);
}
