//! The offset reservation: a limit `L` kept durable ahead of use, so that offsets an `Async` log
//! acknowledged before a crash are never handed out again after it.
//!
//! An `Async` append is acknowledged once buffered, so a crash can lose it; recovery then ends
//! the log at the last synced batch, below offsets producers (and consumers' commits) already
//! know. The log therefore acknowledges only offsets below a limit `L` that is on disk first,
//! and recovery starts the log at `max(recovered end, L)`: the lost offsets become a recorded
//! gap ([`super::skipped`]) instead of names of other records.
//!
//! The file [`crate::file::RESERVATION_FILE_NAME`] holds two [`SLOT_BYTES`] slots, written
//! alternately in place (O_DIRECT write + fdatasync), so raising `L` needs no new disk space
//! and a torn write of one slot leaves the other readable. Each slot:
//!
//! | at | len | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `DFBRESV\0` |
//! | 8 | 4 | version, 1 (u32 LE) |
//! | 12 | 4 | reserved, zero |
//! | 16 | 8 | sequence: the slot with the higher one is current (u64 LE) |
//! | 24 | 8 | limit `L`: offsets below it may have been acknowledged (u64 LE) |
//! | 32 | 4 | CRC32C of bytes `[0, 32)` (u32 LE) |
//! | 36 | 4060 | zero |

use std::{
    cell::Cell,
    future::poll_fn,
    path::{Path, PathBuf},
    task::Poll,
    time::Instant,
};

use crate::{
    file,
    log::{
        commit::Commit,
        config::{RESERVE_AHEAD_MS, RESERVE_STEP_OFFSETS_MAX, RESERVE_STEP_OFFSETS_MIN},
        error::LogError,
        segment::{PendingWrite, write_pending},
        storage::Storage,
    },
};

/// Bytes of one slot: one device block, so a slot is written whole by one O_DIRECT write.
pub const SLOT_BYTES: usize = 4096;
/// Slots in the file, written alternately.
const SLOTS: u64 = 2;
const MAGIC: [u8; 8] = *b"DFBRESV\0";
const VERSION: u32 = 1;
/// Bytes of a slot covered by its checksum.
const CHECKED_LEN: usize = 32;
/// Bytes of a slot holding data; the rest is zero.
const USED_LEN: usize = CHECKED_LEN + 4;

const _: () = assert!(USED_LEN <= SLOT_BYTES && SLOT_BYTES.is_power_of_two());

/// One slot's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Which write this is; the higher of two valid slots is current.
    pub sequence: u64,
    /// Offsets below this may have been acknowledged.
    pub limit: u64,
}

impl Record {
    /// The slot's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; SLOT_BYTES];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&VERSION.to_le_bytes());
        out[16..24].copy_from_slice(&self.sequence.to_le_bytes());
        out[24..32].copy_from_slice(&self.limit.to_le_bytes());
        let crc = crc32c::crc32c(&out[..CHECKED_LEN]);
        out[CHECKED_LEN..USED_LEN].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a slot; `Ok(None)` for a slot never written (all zero), `Err` with the reason
    /// for anything else that is not a valid record.
    pub fn decode(slot: &[u8]) -> Result<Option<Self>, String> {
        if slot.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        if slot.len() < USED_LEN {
            return Err(format!("slot of {} bytes is too short", slot.len()));
        }
        let u32_at = |at: usize| {
            let mut raw = [0u8; 4];
            raw.copy_from_slice(&slot[at..at + 4]);
            u32::from_le_bytes(raw)
        };
        let u64_at = |at: usize| {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&slot[at..at + 8]);
            u64::from_le_bytes(raw)
        };
        if slot[0..8] != MAGIC {
            return Err("bad magic".into());
        }
        let crc = u32_at(CHECKED_LEN);
        let computed = crc32c::crc32c(&slot[..CHECKED_LEN]);
        if crc != computed {
            return Err(format!(
                "checksum mismatch: stored {crc:#010x}, computed {computed:#010x}"
            ));
        }
        let version = u32_at(8);
        if version != VERSION {
            return Err(format!("unknown version {version}"));
        }
        if u32_at(12) != 0 || slot[USED_LEN..].iter().any(|&b| b != 0) {
            return Err("reserved bytes are not zero".into());
        }
        Ok(Some(Self {
            sequence: u64_at(16),
            limit: u64_at(24),
        }))
    }
}

/// The current record of a reservation file's bytes: the valid slot with the higher
/// sequence. `Ok(None)` when no slot was ever written; `Err` when a slot holds something but
/// none is valid (then what was acknowledged is unknown).
pub fn current(bytes: &[u8]) -> Result<Option<Record>, String> {
    let mut best: Option<Record> = None;
    let mut invalid = Vec::new();
    for slot in 0..SLOTS as usize {
        let from = (slot * SLOT_BYTES).min(bytes.len());
        let to = ((slot + 1) * SLOT_BYTES).min(bytes.len());
        match Record::decode(&bytes[from..to]) {
            Ok(Some(record)) => {
                if best.is_none_or(|b| record.sequence > b.sequence) {
                    best = Some(record);
                }
            }
            Ok(None) => {}
            Err(reason) => invalid.push(format!("slot {slot}: {reason}")),
        }
    }
    match best {
        None if !invalid.is_empty() => Err(invalid.join("; ")),
        best => {
            if !invalid.is_empty() {
                // A torn write of the newer slot: the older one is still a valid limit, since
                // the torn write had not completed, so nothing relied on it.
                ::log::warn!("offset reservation: ignoring {}", invalid.join("; "));
            }
            Ok(best)
        }
    }
}

/// Reads the reservation of the log in `dir`: `Ok(None)` if it has none.
pub(crate) async fn load<S: Storage>(
    storage: &S,
    dir: &Path,
) -> Result<Option<(S::File, Option<Record>)>, LogError> {
    let path = file::reservation_path(dir);
    let file = match storage.open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io("open", &path, e)),
    };
    let bytes = storage
        .read_at(&file, 0, SLOT_BYTES * SLOTS as usize)
        .await
        .map_err(|e| LogError::io("read", &path, e))?;
    let record = current(&bytes).map_err(|reason| LogError::Corrupt {
        path: path.clone(),
        position: 0,
        reason: format!(
            "offset reservation unreadable ({reason}); which offsets were acknowledged is \
             unknown, so the log will not guess: restore the file, or remove it to accept \
             that offsets acknowledged before the crash may be reused"
        ),
    })?;
    Ok(Some((file, record)))
}

/// The reservation of an open `Async` log. Only the committer writes it.
pub(crate) struct Reservation<F> {
    file: F,
    path: PathBuf,
    /// Sequence of the last record written.
    sequence: Cell<u64>,
    /// The durable limit: appends may acknowledge offsets below it.
    limit: Cell<u64>,
    /// The step of the last raise: the next is due once half of it is left.
    step: Cell<u64>,
    /// When the last raise happened and the log's `next_offset` then, for the rate.
    raised: Cell<(Instant, u64)>,
}

impl<F> Reservation<F> {
    /// Offsets below this may be acknowledged.
    pub(crate) fn limit(&self) -> u64 {
        self.limit.get()
    }

    /// Whether the committer should raise the limit now that appends reached `next_offset`.
    pub(crate) fn due(&self, next_offset: u64) -> bool {
        next_offset.saturating_add(self.step.get() / 2) > self.limit.get()
    }

    /// How far past `next_offset` the next raise reserves: about [`RESERVE_AHEAD_MS`] at the
    /// rate since the last raise, within the configured bounds.
    fn next_step(&self, next_offset: u64) -> u64 {
        let (at, offset) = self.raised.get();
        let elapsed_ms = u64::try_from(at.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let used = next_offset.saturating_sub(offset);
        let ahead = used.saturating_mul(RESERVE_AHEAD_MS) / elapsed_ms;
        ahead.clamp(RESERVE_STEP_OFFSETS_MIN, RESERVE_STEP_OFFSETS_MAX)
    }
}

impl<F> Reservation<F> {
    /// Takes over the reservation file (`loaded`) or creates it, and makes `next_offset` plus
    /// a first step durable before any append can be acknowledged.
    pub(crate) async fn start<S: Storage<File = F>>(
        storage: &S,
        dir: &Path,
        loaded: Option<(F, Option<Record>)>,
        next_offset: u64,
    ) -> Result<Self, LogError> {
        let path = file::reservation_path(dir);
        let (file, sequence) = match loaded {
            Some((file, record)) => (file, record.map_or(0, |r| r.sequence)),
            None => {
                let file = storage
                    .create(&path)
                    .await
                    .map_err(|e| LogError::io("create", &path, e))?;
                // Both slots are written now, while there is room: every later raise or lower
                // overwrites allocated space, so a full disk never stops one.
                let zeros = crate::log::segment::PendingWrite {
                    position: 0,
                    data: vec![0; SLOT_BYTES * SLOTS as usize],
                };
                crate::log::segment::write_pending(storage, &file, &path, &zeros).await?;
                // The name must survive a crash before the limit in it is relied on.
                file::fsync_directory(storage, dir)
                    .await
                    .map_err(|e| LogError::io("fsync directory", dir, e))?;
                (file, 0)
            }
        };
        let reservation = Self {
            file,
            path,
            sequence: Cell::new(sequence),
            limit: Cell::new(next_offset),
            step: Cell::new(RESERVE_STEP_OFFSETS_MIN),
            raised: Cell::new((Instant::now(), next_offset)),
        };
        reservation.raise(storage, next_offset).await?;
        Ok(reservation)
    }

    /// Writes a limit one step past `next_offset` and fdatasyncs it; from then on appends may
    /// acknowledge offsets below it.
    pub(crate) async fn raise<S: Storage<File = F>>(
        &self,
        storage: &S,
        next_offset: u64,
    ) -> Result<(), LogError> {
        let step = self.next_step(next_offset);
        let limit = next_offset.saturating_add(step).max(self.limit.get());
        self.write(storage, limit).await?;
        self.step.set(step);
        self.raised.set((Instant::now(), next_offset));
        Ok(())
    }

    /// At a clean close, once everything below `next_offset` is synced: lowers the limit to
    /// it, so the next open starts there with no gap.
    pub(crate) async fn lower<S: Storage<File = F>>(
        &self,
        storage: &S,
        next_offset: u64,
    ) -> Result<(), LogError> {
        if next_offset < self.limit.get() {
            self.write(storage, next_offset).await?;
        }
        Ok(())
    }

    async fn write<S: Storage<File = F>>(&self, storage: &S, limit: u64) -> Result<(), LogError> {
        let alignment = storage.alignment(&self.file);
        if alignment > SLOT_BYTES as u64 {
            return Err(LogError::Config {
                reason: format!(
                    "{}: device block of {alignment} bytes is larger than a reservation slot \
                     ({SLOT_BYTES} bytes)",
                    self.path.display()
                ),
            });
        }
        let sequence = self.sequence.get() + 1;
        let record = Record { sequence, limit };
        let write = PendingWrite {
            position: (sequence % SLOTS) * SLOT_BYTES as u64,
            data: record.encode(),
        };
        write_pending(storage, &self.file, &self.path, &write).await?;
        storage
            .fdatasync(&self.file)
            .await
            .map_err(|e| LogError::io("fdatasync", &self.path, e))?;
        self.sequence.set(sequence);
        self.limit.set(limit);
        Ok(())
    }
}

/// Resolves once the reservation covers every offset below `next_offset`, or with the
/// poisoning error. The committer wakes parked appends after each raise.
pub(crate) async fn wait_covers<F>(
    commit: &Commit,
    reservation: &Reservation<F>,
    next_offset: u64,
) -> Result<(), LogError> {
    commit.kick();
    poll_fn(|cx| {
        if let Err(e) = commit.check_poisoned() {
            return Poll::Ready(Err(e));
        }
        if reservation.limit() >= next_offset {
            return Poll::Ready(Ok(()));
        }
        commit.park_until_progress(cx.waker().clone());
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_slot_bytes() {
        let record = Record {
            sequence: 3,
            limit: 0x0102_0304_0506_0708,
        };
        let bytes = record.encode();
        assert_eq!(bytes.len(), SLOT_BYTES);
        // The CRC32C was checked against an independent bitwise implementation.
        assert_eq!(
            &bytes[..USED_LEN],
            &[
                b'D', b'F', b'B', b'R', b'E', b'S', b'V', 0, 1, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0,
                0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1, 0x1a, 0x33, 0x4f, 0x37
            ]
        );
        assert_eq!(Record::decode(&bytes), Ok(Some(record)));
    }

    #[test]
    fn the_newer_valid_slot_wins_and_a_torn_slot_is_ignored() {
        let old = Record {
            sequence: 4,
            limit: 100,
        };
        let new = Record {
            sequence: 5,
            limit: 200,
        };
        let mut file = old.encode();
        file.extend_from_slice(&new.encode());
        assert_eq!(current(&file), Ok(Some(new)));
        // A torn write of slot 1.
        file[SLOT_BYTES + 24] ^= 0xFF;
        assert_eq!(current(&file), Ok(Some(old)));
        // Both damaged: unknown, an error rather than a guess.
        file[24] ^= 0xFF;
        assert!(current(&file).is_err());
        // Never written.
        assert_eq!(current(&vec![0u8; 2 * SLOT_BYTES]), Ok(None));
        assert_eq!(current(&[]), Ok(None));
    }
}
