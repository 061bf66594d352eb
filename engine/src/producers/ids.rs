//! Producer ids: unique in the cluster, never handed out twice, also across restarts
//! (`docs/ARCHITECTURE.md` §13.1).
//!
//! An id is the broker's tag in its high 32 bits (a hash of its cluster and broker id, so two
//! brokers of a cluster hand out different ids unless their tags collide, about one chance in
//! 2^32 per pair) and a counter in its low 32 bits. The counter is leased in blocks: the file
//! [`crate::file::PRODUCER_IDS_FILE_NAME`] in the data directory holds the end of the last
//! block leased, written before any id of that block is handed out:
//!
//! 1. write the new end to `PRODUCER_IDS.tmp`, fsync it;
//! 2. rename it over `PRODUCER_IDS`, fsync the data directory.
//!
//! A crash loses at most the rest of a block (ids skipped, never reused). Leasing happens once
//! per [`BLOCK`] ids, under a mutex shared by the shards: a blocking write, like the topic
//! registry's, rare enough not to matter to the executor.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Ids leased per durable write.
pub const BLOCK: u64 = 1024;

/// Why no id could be handed out.
#[derive(Debug, thiserror::Error)]
pub enum IdError {
    /// Reading or writing the lease file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The lease file does not hold a counter.
    #[error("{path} is damaged: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The broker handed out all 2^32 ids of its tag.
    #[error("this broker handed out all {} producer ids of its tag", u32::MAX)]
    Exhausted,
}

struct Lease {
    /// The next id's counter.
    next: u64,
    /// One past the last counter leased durably.
    end: u64,
}

/// The broker's producer id source, shared by its shards.
pub struct ProducerIds {
    tag: u64,
    dir: PathBuf,
    lease: Mutex<Option<Lease>>,
}

impl ProducerIds {
    /// The id source of the broker `broker_id` of `cluster`, leasing in `data_dir`. Reads
    /// nothing until the first id is asked for.
    pub fn new(cluster: &str, broker_id: &str, data_dir: &Path) -> Self {
        let mut tagged = Vec::with_capacity(cluster.len() + broker_id.len() + 1);
        tagged.extend_from_slice(cluster.as_bytes());
        tagged.push(0);
        tagged.extend_from_slice(broker_id.as_bytes());
        Self {
            tag: u64::from(crc32c::crc32c(&tagged)) << 32,
            dir: data_dir.to_owned(),
            lease: Mutex::new(None),
        }
    }

    /// A fresh id, never 0 and never handed out before by this broker.
    pub fn next(&self) -> Result<u64, IdError> {
        let mut lease = self
            .lease
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = match lease.take() {
            Some(current) => current,
            None => {
                // Counter 0 is never used: with a zero tag the id would be 0, "no producer".
                let end = self.read_end()?.max(1);
                Lease { next: end, end }
            }
        };
        let mut current = current;
        if current.next >= current.end {
            let end = current.end + BLOCK;
            if end > u64::from(u32::MAX) {
                *lease = Some(current);
                return Err(IdError::Exhausted);
            }
            if let Err(e) = self.write_end(end) {
                *lease = Some(current);
                return Err(e);
            }
            current.end = end;
        }
        let id = self.tag | current.next;
        current.next += 1;
        *lease = Some(current);
        Ok(id)
    }

    fn path(&self) -> PathBuf {
        self.dir.join(crate::file::PRODUCER_IDS_FILE_NAME)
    }

    fn read_end(&self) -> Result<u64, IdError> {
        let path = self.path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => {
                return Err(IdError::Io {
                    op: "read",
                    path,
                    source,
                });
            }
        };
        text.trim().parse().map_err(|e| IdError::Damaged {
            path,
            reason: format!("{e}: {:?}", text.trim()),
        })
    }

    fn write_end(&self, end: u64) -> Result<(), IdError> {
        let path = self.path();
        let tmp = path.with_extension("tmp");
        let io = |op: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| IdError::Io { op, path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(io("create", &self.dir))?;
        let mut file = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
        file.write_all(format!("{end}\n").as_bytes())
            .map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("fsync", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        std::fs::File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io("fsync", &self.dir))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_never_reused_after_a_restart_and_differ_between_brokers() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIds::new("c", "broker-a", dir.path());
        let first: Vec<u64> = (0..3).map(|_| a.next().unwrap()).collect();
        assert!(first.iter().all(|&id| id != 0));
        assert!(first.windows(2).all(|w| w[0] < w[1]));
        // A restart (a new source over the same directory) starts past the leased block.
        let again = ProducerIds::new("c", "broker-a", dir.path());
        let after = again.next().unwrap();
        assert!(after > first[2], "{after} after {first:?}");
        assert_eq!(after & 0xffff_ffff, 1 + BLOCK);
        // Another broker's ids carry another tag.
        let other = tempfile::tempdir().unwrap();
        let b = ProducerIds::new("c", "broker-b", other.path());
        assert_ne!(b.next().unwrap() >> 32, first[0] >> 32);
    }

    #[test]
    fn a_damaged_lease_file_is_an_error_not_a_reuse() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(crate::file::PRODUCER_IDS_FILE_NAME), "x").unwrap();
        let ids = ProducerIds::new("c", "b", dir.path());
        assert!(matches!(ids.next(), Err(IdError::Damaged { .. })));
    }
}
