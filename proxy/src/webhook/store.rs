//! The durable list of webhook subscriptions: `subscriptions.proxy` in `data_dir`, one
//! snapshot of every subscription, replaced whole on every change.
//!
//! Format: the `svc::file` snapshot (magic `DFBPXY01`, version, length, CRC32C) around a JSON
//! body, [`Snapshot`]. JSON rather than rkyv: the list is small, changes at human speed, and
//! an operator can read it with `tail -c +25 subscriptions.proxy`.
//!
//! Durability protocol (`svc::file::write_atomically`), run before a change is answered:
//! 1. write the whole snapshot to `subscriptions.proxy.tmp`;
//! 2. **fsync** it;
//! 3. rename it over `subscriptions.proxy`;
//! 4. **fsync `data_dir`**, so the rename survives a power loss.
//!
//! Memory changes only once the write succeeded. A failed write poisons the store: every
//! later change is refused (503 `storage`) until a restart re-reads the last good snapshot,
//! because after a failed fsync nobody knows what is on disk.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::{Identity, Mode, Start};
use crate::error::ProxyError;

/// Names the owner and format of the snapshot file.
const MAGIC: &[u8; 8] = b"DFBPXY01";
/// The snapshot's file name in `data_dir`.
pub const FILE_NAME: &str = "subscriptions.proxy";

/// What a webhook subscription is: everything needed to start it again after a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookSpec {
    /// Its id, `sub-N`, stable across restarts.
    pub id: String,
    /// The subscriber; its heartbeats renew the lease.
    pub identity: Identity,
    /// The topic.
    pub topic: String,
    /// The consumer group.
    pub group: String,
    /// Clustering or broadcast.
    pub mode: Mode,
    /// Where the group started when it had no committed offset.
    pub start: Start,
    /// Where each message is POSTed.
    pub url: String,
    /// The principal that created it, when security was on: it must keep its `consume`
    /// grant for deliveries to go on ([`super::standing`]). Absent from a subscription made
    /// with security off (and from files written before owners were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// The file's body.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// The next subscription number, so an id is never reused.
    pub next_id: u64,
    /// Every subscription.
    pub subscriptions: Vec<HookSpec>,
}

/// The open store: its directory's lock, held while the proxy runs, and the poison flag.
pub struct Store {
    path: PathBuf,
    _lock: File,
    poisoned: Option<String>,
}

impl Store {
    /// Opens (creating) `dir`, takes its lock and reads the snapshot, empty when none.
    pub fn open(dir: &Path) -> Result<(Self, Snapshot), ProxyError> {
        let failed = |source: std::io::Error| ProxyError::Store {
            path: dir.to_owned(),
            reason: source.to_string(),
        };
        let lock = svc::file::open_dir(dir).map_err(failed)?;
        let path = dir.join(FILE_NAME);
        let snapshot = match svc::file::read_snapshot(&path).map_err(failed)? {
            None => Snapshot::default(),
            Some(bytes) => {
                let corrupt = |reason: String| ProxyError::Store {
                    path: path.clone(),
                    reason,
                };
                let body = svc::file::decode_snapshot(MAGIC, &bytes).map_err(corrupt)?;
                serde_json::from_slice(body).map_err(|e| corrupt(format!("body: {e}")))?
            }
        };
        let store = Self {
            path,
            _lock: lock,
            poisoned: None,
        };
        Ok((store, snapshot))
    }

    /// Replaces the snapshot (the module's durability protocol); after a failure every call
    /// fails.
    pub fn save(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        if let Some(reason) = &self.poisoned {
            return Err(format!(
                "the subscription store failed earlier ({reason}); restart the proxy"
            ));
        }
        let body = serde_json::to_vec(snapshot).map_err(|e| e.to_string())?;
        let bytes = svc::file::encode_snapshot(MAGIC, &body);
        svc::file::write_atomically(&self.path, &bytes).map_err(|e| {
            let reason = format!("writing {}: {e}", self.path.display());
            log::error!("{reason}; subscription changes are refused until a restart");
            self.poisoned = Some(reason.clone());
            reason
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str) -> HookSpec {
        HookSpec {
            id: id.into(),
            identity: Identity {
                system: "s".into(),
                area: "A10".into(),
                group: "g".into(),
                instance: "i".into(),
            },
            topic: "A10-1".into(),
            group: "hooks".into(),
            mode: Mode::Broadcast,
            start: Start::Latest,
            url: "http://127.0.0.1:1/hook".into(),
            owner: Some("app".into()),
        }
    }

    #[test]
    fn a_subscription_stored_before_owners_were_kept_reads_as_ownerless() {
        let mut json = serde_json::to_value(spec("sub-1")).unwrap();
        json.as_object_mut().unwrap().remove("owner");
        let read: HookSpec = serde_json::from_value(json).unwrap();
        assert_eq!(read.owner, None);
        assert_eq!(read.url, spec("sub-1").url);
    }

    #[test]
    fn snapshots_survive_a_reopen_and_the_lock_keeps_a_second_store_out() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, empty) = Store::open(dir.path()).unwrap();
        assert_eq!(empty, Snapshot::default());
        assert!(Store::open(dir.path()).is_err(), "the directory is locked");
        let saved = Snapshot {
            next_id: 3,
            subscriptions: vec![spec("sub-1"), spec("sub-2")],
        };
        store.save(&saved).unwrap();
        drop(store);
        let (_store, read) = Store::open(dir.path()).unwrap();
        assert_eq!(read, saved);
    }

    #[test]
    fn a_damaged_snapshot_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path()).unwrap();
        store.save(&Snapshot::default()).unwrap();
        drop(store);
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let error = Store::open(dir.path()).err().expect("refused").to_string();
        assert!(
            error.contains(FILE_NAME) && error.contains("checksum"),
            "{error}"
        );
    }

    #[test]
    fn a_failed_write_poisons_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path()).unwrap();
        // A directory where the temporary file goes makes the write fail.
        std::fs::create_dir(dir.path().join(format!("{FILE_NAME}.tmp"))).unwrap();
        assert!(store.save(&Snapshot::default()).is_err());
        std::fs::remove_dir(dir.path().join(format!("{FILE_NAME}.tmp"))).unwrap();
        let again = store.save(&Snapshot::default()).unwrap_err();
        assert!(again.contains("restart"), "{again}");
    }
}
