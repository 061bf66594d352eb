//! The leader-epoch journal of a replicated queue: at which offset each leader epoch began.
//!
//! Every leader of a queue is elected for an epoch, a number the controller raises at each
//! election. A leader records "epoch `E` begins at offset `O`" (its log end when it took
//! over) before it appends anything in that epoch, and followers record the same entries as
//! they copy the leader's batches. Two replicas that agree on where every epoch began hold the
//! same batches below their common end (the leader of an epoch appended them all), so a
//! returning replica finds its divergent tail by asking the leader where the replica's last
//! epoch ended ([`EpochHistory::end_of`]) and cuts its log there before it fetches (Kafka's
//! leader-epoch cache, KIP-101/279). Offsets alone cannot tell that: a deposed leader may hold
//! batches at offsets the new leader filled with other batches.
//!
//! The file [`crate::file::EPOCHS_FILE_NAME`] is append-only, like the skipped journal:
//! fixed [`ENTRY_LEN`]-byte events, each with its own checksum, then zero padding; an append
//! rewrites the last block (O_DIRECT) and fdatasyncs it. Folding the events in order gives the
//! history. Each event:
//!
//! | at | len | field |
//! |---:|---:|---|
//! | 0 | 4 | magic `EPCH` |
//! | 4 | 2 | version, 1 (u16 LE) |
//! | 6 | 2 | kind: 1 = epoch begins, 2 = log truncated (u16 LE) |
//! | 8 | 8 | epoch (kind 1), zero (kind 2) (u64 LE) |
//! | 16 | 8 | the epoch's first offset (kind 1), the new log end (kind 2) (u64 LE) |
//! | 24 | 4 | reserved, zero |
//! | 28 | 4 | CRC32C of bytes `[0, 28)` (u32 LE) |

use std::{cell::RefCell, path::Path};

use crate::{
    file,
    log::{
        error::LogError,
        segment::{PendingWrite, align_down, write_pending},
        storage::Storage,
    },
};

/// Bytes of one event; a block holds a whole number of them.
pub const ENTRY_LEN: usize = 32;
const MAGIC: [u8; 4] = *b"EPCH";
const VERSION: u16 = 1;
const CHECKED_LEN: usize = ENTRY_LEN - 4;
const KIND_BEGIN: u16 = 1;
const KIND_TRUNCATE: u16 = 2;

const _: () = assert!(512 % ENTRY_LEN == 0);

/// Where one leader epoch began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochStart {
    /// The epoch.
    pub epoch: u64,
    /// The offset of its first batch (the log end when its leader took over).
    pub start_offset: u64,
}

/// One event of the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochEvent {
    /// An epoch began.
    Begin(EpochStart),
    /// The log was cut to this end: epochs that began at or past it are gone.
    Truncate(u64),
}

impl EpochEvent {
    /// The event's bytes.
    pub fn encode(&self) -> [u8; ENTRY_LEN] {
        let (kind, epoch, offset) = match *self {
            Self::Begin(start) => (KIND_BEGIN, start.epoch, start.start_offset),
            Self::Truncate(end) => (KIND_TRUNCATE, 0, end),
        };
        let mut out = [0u8; ENTRY_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&VERSION.to_le_bytes());
        out[6..8].copy_from_slice(&kind.to_le_bytes());
        out[8..16].copy_from_slice(&epoch.to_le_bytes());
        out[16..24].copy_from_slice(&offset.to_le_bytes());
        let crc = crc32c::crc32c(&out[..CHECKED_LEN]);
        out[CHECKED_LEN..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes one event of exactly [`ENTRY_LEN`] bytes; `Ok(None)` for zero padding.
    pub fn decode(entry: &[u8]) -> Result<Option<Self>, String> {
        if entry.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        if entry.len() != ENTRY_LEN {
            return Err(format!("entry of {} bytes", entry.len()));
        }
        if entry[0..4] != MAGIC {
            return Err("bad magic".into());
        }
        let u16_at = |at: usize| u16::from_le_bytes([entry[at], entry[at + 1]]);
        let u64_at = |at: usize| {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&entry[at..at + 8]);
            u64::from_le_bytes(raw)
        };
        let mut raw4 = [0u8; 4];
        raw4.copy_from_slice(&entry[CHECKED_LEN..]);
        let stored = u32::from_le_bytes(raw4);
        let computed = crc32c::crc32c(&entry[..CHECKED_LEN]);
        if stored != computed {
            return Err(format!(
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ));
        }
        let version = u16_at(4);
        if version != VERSION {
            return Err(format!("unknown version {version}"));
        }
        if entry[24..CHECKED_LEN].iter().any(|&b| b != 0) {
            return Err("reserved bytes are not zero".into());
        }
        match u16_at(6) {
            KIND_BEGIN => Ok(Some(Self::Begin(EpochStart {
                epoch: u64_at(8),
                start_offset: u64_at(16),
            }))),
            KIND_TRUNCATE => Ok(Some(Self::Truncate(u64_at(16)))),
            kind => Err(format!("unknown kind {kind}")),
        }
    }
}

/// Why an epoch cannot be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EpochError {
    /// Epochs only grow, and each begins at or after the one before.
    #[error(
        "epoch {epoch} at offset {start_offset} does not follow epoch {latest_epoch} at offset {latest_start}"
    )]
    OutOfOrder {
        /// The epoch refused.
        epoch: u64,
        /// Where it was said to begin.
        start_offset: u64,
        /// The latest recorded epoch.
        latest_epoch: u64,
        /// Where that one began.
        latest_start: u64,
    },
    /// An epoch cannot begin past the log's end: the batches before it are missing.
    #[error("epoch {epoch} cannot begin at offset {start_offset}, past the log's end {log_end}")]
    BeyondEnd {
        /// The epoch refused.
        epoch: u64,
        /// Where it was said to begin.
        start_offset: u64,
        /// The log's next offset.
        log_end: u64,
    },
}

/// The epochs of a log, oldest first: each began where the next one's predecessor ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochHistory {
    starts: Vec<EpochStart>,
}

impl EpochHistory {
    /// The history that `events` leave, applied in order. Events that do not apply (an epoch
    /// out of order) are skipped: [`Self::begin`] refuses them before they are written.
    pub fn fold(events: &[EpochEvent]) -> Self {
        let mut history = Self::default();
        for event in events {
            match *event {
                EpochEvent::Begin(start) => {
                    let _ = history.begin(start);
                }
                EpochEvent::Truncate(end) => history.truncate(end),
            }
        }
        history
    }

    /// Every epoch, oldest first.
    pub fn starts(&self) -> &[EpochStart] {
        &self.starts
    }

    /// The latest epoch.
    pub fn latest(&self) -> Option<EpochStart> {
        self.starts.last().copied()
    }

    /// Whether recording `start` changes the history: false when it is the latest epoch again
    /// with the same start (a follower told twice), an error when it goes backwards.
    pub fn check(&self, start: EpochStart) -> Result<bool, EpochError> {
        let Some(latest) = self.latest() else {
            return Ok(true);
        };
        if start == latest {
            return Ok(false);
        }
        if start.epoch <= latest.epoch || start.start_offset < latest.start_offset {
            return Err(EpochError::OutOfOrder {
                epoch: start.epoch,
                start_offset: start.start_offset,
                latest_epoch: latest.epoch,
                latest_start: latest.start_offset,
            });
        }
        Ok(true)
    }

    /// Records that `start.epoch` began at `start.start_offset` (see [`Self::check`]). An
    /// epoch that began where the latest one began replaces it: that one holds no batch.
    pub fn begin(&mut self, start: EpochStart) -> Result<bool, EpochError> {
        if !self.check(start)? {
            return Ok(false);
        }
        if self
            .latest()
            .is_some_and(|latest| latest.start_offset == start.start_offset)
        {
            self.starts.pop();
        }
        self.starts.push(start);
        Ok(true)
    }

    /// Forgets the epochs that began at or past `end`, after the log was cut there.
    pub fn truncate(&mut self, end: u64) {
        self.starts.retain(|s| s.start_offset < end);
    }

    /// The epoch that `offset` belongs to.
    pub fn epoch_of(&self, offset: u64) -> Option<u64> {
        let at = self.starts.partition_point(|s| s.start_offset <= offset);
        at.checked_sub(1).map(|i| self.starts[i].epoch)
    }

    /// Where `epoch` ended in a log ending at `log_end`: the latest recorded epoch at or
    /// below it, and the offset where the epoch after that one began (or `log_end` when it is
    /// the latest). A replica whose last epoch is `epoch` keeps its batches below the returned
    /// end and cuts the rest. `None` when every recorded epoch is newer than `epoch`: the
    /// replica's epochs predate this history, and it cuts to what it knows was committed.
    pub fn end_of(&self, epoch: u64, log_end: u64) -> Option<(u64, u64)> {
        let at = self.starts.partition_point(|s| s.epoch <= epoch);
        let found = self.starts.get(at.checked_sub(1)?)?;
        let end = self
            .starts
            .get(at)
            .map_or(log_end, |next| next.start_offset);
        Some((found.epoch, end))
    }

    /// The epoch that `offset` belongs to and every later one: what a leader sends with
    /// batches from `offset`, so the follower records the same starts.
    pub fn from_offset(&self, offset: u64) -> Vec<EpochStart> {
        let at = self.starts.partition_point(|s| s.start_offset <= offset);
        self.starts[at.saturating_sub(1)..].to_vec()
    }
}

/// The leader-epoch journal of one queue directory.
#[derive(Debug, Default)]
pub(crate) struct EpochJournal {
    /// Every event written, encoded, oldest first (the journal is tiny: one per election).
    written: Vec<[u8; ENTRY_LEN]>,
    history: EpochHistory,
}

impl EpochJournal {
    /// Reads the journal of `dir` (an absent one is empty). A torn last event (its append
    /// never completed, so nothing relied on it) is dropped and overwritten by the next.
    pub(crate) async fn load<S: Storage>(storage: &S, dir: &Path) -> Result<Self, LogError> {
        let path = file::epochs_path(dir);
        let file = match storage.open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(LogError::io("open", &path, e)),
        };
        let len = storage
            .len(&file)
            .await
            .map_err(|e| LogError::io("file length", &path, e))?;
        let bytes = storage
            .read_at(&file, 0, len as usize)
            .await
            .map_err(|e| LogError::io("read", &path, e))?;
        let mut journal = Self::default();
        let mut events = Vec::new();
        for (i, entry) in bytes.chunks(ENTRY_LEN).enumerate() {
            match EpochEvent::decode(entry) {
                Ok(Some(event)) => {
                    events.push(event);
                    journal.written.push(event.encode());
                }
                Ok(None) => break,
                Err(reason) => {
                    ::log::warn!(
                        "{}: dropping a torn event at byte {} after {} valid ones: {reason}",
                        path.display(),
                        i * ENTRY_LEN,
                        events.len()
                    );
                    break;
                }
            }
        }
        journal.history = EpochHistory::fold(&events);
        Ok(journal)
    }

    pub(crate) fn history(&self) -> &EpochHistory {
        &self.history
    }

    /// The bytes to write for `event` after the journal's events, and where: the last
    /// partly filled block again, then the event.
    pub(crate) fn pending_write(&self, event: EpochEvent, alignment: u64) -> PendingWrite {
        let end = (self.written.len() * ENTRY_LEN) as u64;
        let block = align_down(end, alignment);
        let mut data = Vec::with_capacity((end - block) as usize + ENTRY_LEN);
        for entry in &self.written[(block as usize / ENTRY_LEN)..] {
            data.extend_from_slice(entry);
        }
        data.extend_from_slice(&event.encode());
        PendingWrite {
            position: block,
            data,
        }
    }

    /// Takes `event` into memory once it is durable.
    pub(crate) fn applied(&mut self, event: EpochEvent) {
        self.written.push(event.encode());
        match event {
            EpochEvent::Begin(start) => {
                let _ = self.history.begin(start);
            }
            EpochEvent::Truncate(end) => self.history.truncate(end),
        }
    }
}

/// Appends `event` to the journal of `dir` durably (creating the file, and fsyncing its name
/// into the directory, when it does not exist yet), then takes it into `journal`.
///
/// One append at a time: the caller (the log's single writer of epochs) serialises them.
pub(crate) async fn append<S: Storage>(
    storage: &S,
    dir: &Path,
    journal: &RefCell<EpochJournal>,
    event: EpochEvent,
) -> Result<(), LogError> {
    let path = file::epochs_path(dir);
    let file = match storage.open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let f = storage
                .create(&path)
                .await
                .map_err(|e| LogError::io("create", &path, e))?;
            file::fsync_directory(storage, dir)
                .await
                .map_err(|e| LogError::io("fsync directory", dir, e))?;
            f
        }
        Err(e) => return Err(LogError::io("open", &path, e)),
    };
    let write = journal
        .borrow()
        .pending_write(event, storage.alignment(&file));
    write_pending(storage, &file, &path, &write).await?;
    storage
        .fdatasync(&file)
        .await
        .map_err(|e| LogError::io("fdatasync", &path, e))?;
    journal.borrow_mut().applied(event);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(epoch: u64, start_offset: u64) -> EpochStart {
        EpochStart {
            epoch,
            start_offset,
        }
    }

    fn history(starts: &[(u64, u64)]) -> EpochHistory {
        let mut h = EpochHistory::default();
        for &(e, o) in starts {
            assert!(h.begin(start(e, o)).unwrap());
        }
        h
    }

    #[test]
    fn events_round_trip_and_padding_is_none() {
        for event in [EpochEvent::Begin(start(7, 1234)), EpochEvent::Truncate(99)] {
            assert_eq!(EpochEvent::decode(&event.encode()), Ok(Some(event)));
        }
        assert_eq!(EpochEvent::decode(&[0; ENTRY_LEN]), Ok(None));
        let mut bad = EpochEvent::Begin(start(1, 2)).encode();
        bad[9] ^= 1;
        assert!(EpochEvent::decode(&bad).unwrap_err().contains("checksum"));
    }

    #[test]
    fn golden_event_bytes() {
        let bytes = EpochEvent::Begin(start(2, 10)).encode();
        assert_eq!(&bytes[..8], b"EPCH\x01\x00\x01\x00");
        assert_eq!(bytes[8], 2);
        assert_eq!(bytes[16], 10);
    }

    #[test]
    fn epochs_only_grow() {
        let mut h = history(&[(1, 0), (3, 10)]);
        assert_eq!(h.begin(start(3, 10)), Ok(false), "told twice");
        assert!(h.begin(start(2, 20)).is_err(), "older epoch");
        assert!(h.begin(start(4, 5)).is_err(), "begins before the latest");
        assert_eq!(h.begin(start(4, 10)), Ok(true));
        assert_eq!(
            h.starts(),
            &[start(1, 0), start(4, 10)],
            "epoch 3 held nothing"
        );
    }

    #[test]
    fn where_an_epoch_ended() {
        let h = history(&[(1, 0), (2, 10), (5, 25)]);
        assert_eq!(h.end_of(1, 40), Some((1, 10)));
        assert_eq!(h.end_of(2, 40), Some((2, 25)));
        assert_eq!(
            h.end_of(3, 40),
            Some((2, 25)),
            "3 and 4 never held a batch here"
        );
        assert_eq!(h.end_of(5, 40), Some((5, 40)));
        assert_eq!(h.end_of(9, 40), Some((5, 40)));
        assert_eq!(history(&[(3, 7)]).end_of(2, 40), None);
        assert_eq!(EpochHistory::default().end_of(1, 0), None);
    }

    #[test]
    fn epoch_of_an_offset_and_what_a_fetch_sends() {
        let h = history(&[(1, 0), (2, 10), (5, 25)]);
        assert_eq!(h.epoch_of(0), Some(1));
        assert_eq!(h.epoch_of(24), Some(2));
        assert_eq!(h.epoch_of(25), Some(5));
        assert_eq!(h.from_offset(12), vec![start(2, 10), start(5, 25)]);
        assert_eq!(h.from_offset(30), vec![start(5, 25)]);
        assert_eq!(history(&[(3, 7)]).epoch_of(2), None);
    }

    #[test]
    fn truncation_forgets_later_epochs_and_folding_replays_it() {
        let events = [
            EpochEvent::Begin(start(1, 0)),
            EpochEvent::Begin(start(2, 10)),
            EpochEvent::Truncate(10),
            EpochEvent::Begin(start(3, 10)),
        ];
        assert_eq!(
            EpochHistory::fold(&events).starts(),
            &[start(1, 0), start(3, 10)]
        );
    }

    #[test]
    fn a_pending_write_rewrites_the_last_partial_block() {
        let mut journal = EpochJournal::default();
        for e in 1..=20 {
            let event = EpochEvent::Begin(start(e, e * 10));
            journal.applied(event);
        }
        let write = journal.pending_write(EpochEvent::Truncate(50), 512);
        // 20 events = 640 bytes: block 512 holds events 16..20, then the new one.
        assert_eq!(write.position, 512);
        assert_eq!(write.data.len(), 5 * ENTRY_LEN);
        assert_eq!(
            EpochEvent::decode(&write.data[4 * ENTRY_LEN..]),
            Ok(Some(EpochEvent::Truncate(50)))
        );
    }
}
