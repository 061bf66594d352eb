//! The directory made durable: every accepted update is on disk before it is answered.
//!
//! The whole directory is one snapshot file (`services.gsl`, format and durability protocol in
//! [`svc::file`]) rewritten on every change. Updates come from SGS, one per operator action
//! (plus periodic re-pushes, which change nothing and write nothing), and a directory of
//! 10,000 services is about 2 MB: rewriting it costs milliseconds, far less than the broker
//! round trips of the deploy that caused it, and recovery is reading one file. A log of
//! updates would only pay off at update rates GSL never sees.
//!
//! Memory never runs ahead of disk: an update is applied, the snapshot written, and the update
//! undone if the write fails. A failed write or fsync poisons the store (what reached the disk
//! is unknown, and a retry could acknowledge what a crash would lose): later updates are
//! refused with `StorageError` until a restart recovers from what is on disk. Resolution
//! goes on from memory meanwhile, which holds exactly the last durable state.

use std::fs::File;
use std::path::{Path, PathBuf};

use log::error;
use protocol::codes::Status;
use protocol::control::{self, GslUpdate};

use crate::directory::{Directory, Limits, Refusal};
use crate::error::GslError;
use svc::file;

/// The snapshot's file name in the data directory.
pub const SNAPSHOT_FILE: &str = "services.gsl";
/// The snapshot's magic: a GSL directory, format 1.
pub const MAGIC: &[u8; 8] = b"DFBGSL01";

/// What an accepted update did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Updated {
    /// The service already resolved to exactly these deployments; nothing was written.
    Unchanged,
    /// The directory changed and the change is durable.
    Changed,
}

/// The durable directory. Owns the data directory's lock.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    directory: Directory,
    limits: Limits,
    poisoned: Option<String>,
    _lock: File,
}

impl Store {
    /// Opens (or creates) the state in `dir` and recovers the directory from it.
    pub fn open(dir: &Path, limits: Limits) -> Result<Self, GslError> {
        let storage = |path: &Path| {
            let path = path.to_path_buf();
            move |source| GslError::Storage { path, source }
        };
        let lock = file::open_dir(dir).map_err(storage(dir))?;
        let path = dir.join(SNAPSHOT_FILE);
        let directory = match file::read_snapshot(&path).map_err(storage(&path))? {
            None => Directory::default(),
            Some(bytes) => {
                let corrupt = |reason: String| GslError::Corrupt {
                    path: path.clone(),
                    reason,
                };
                let body = file::decode_snapshot(MAGIC, &bytes).map_err(corrupt)?;
                let updates: Vec<GslUpdate> =
                    control::decode(body).map_err(|e| corrupt(e.to_string()))?;
                Directory::from_updates(updates, limits).map_err(|e| corrupt(e.message))?
            }
        };
        Ok(Self {
            path,
            directory,
            limits,
            poisoned: None,
            _lock: lock,
        })
    }

    /// The directory as last made durable.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Checks, applies and persists `update`.
    pub fn update(&mut self, update: GslUpdate) -> Result<Updated, Refusal> {
        if let Some(reason) = &self.poisoned {
            return Err(Refusal {
                status: Status::StorageError,
                message: format!("updates are refused until a restart: {reason}"),
            });
        }
        let checked = self.directory.check(update, self.limits)?;
        let service = checked.service.clone();
        let deployments = checked.deployments.clone();
        let previous = self.directory.apply(checked);
        if previous.as_deref().unwrap_or_default() == deployments.as_slice() {
            return Ok(Updated::Unchanged);
        }
        if let Err(reason) = self.persist() {
            self.directory.restore(service, previous);
            error!(
                "GSL state {}: {reason}; refusing updates until a restart",
                self.path.display()
            );
            self.poisoned = Some(reason.clone());
            return Err(Refusal {
                status: Status::StorageError,
                message: reason,
            });
        }
        Ok(Updated::Changed)
    }

    fn persist(&self) -> Result<(), String> {
        let body = control::encode(&self.directory.to_updates()).map_err(|e| e.to_string())?;
        let bytes = file::encode_snapshot(MAGIC, &body);
        file::write_atomically(&self.path, &bytes)
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::control::Deployment;

    const LIMITS: Limits = Limits {
        services_max: 100,
        deployments_per_service_max: 4,
    };

    fn update(service: &str, areas: &[&str]) -> GslUpdate {
        GslUpdate {
            service_id: service.into(),
            deployments: areas
                .iter()
                .map(|area| Deployment {
                    area: (*area).into(),
                    topic: format!("{area}-{service}"),
                    cluster: "c".into(),
                    nameservers: vec!["127.0.0.1:9876".into()],
                })
                .collect(),
        }
    }

    #[test]
    fn a_reopened_store_has_every_service_and_unchanged_updates_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), LIMITS).unwrap();
        assert_eq!(
            store.update(update("1", &["A10", "B20"])),
            Ok(Updated::Changed)
        );
        assert_eq!(store.update(update("2", &["B20"])), Ok(Updated::Changed));
        assert_eq!(store.update(update("2", &[])), Ok(Updated::Changed));
        let written = std::fs::metadata(dir.path().join(SNAPSHOT_FILE))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(
            store.update(update("1", &["B20", "A10"])),
            Ok(Updated::Unchanged)
        );
        let expected = store.directory().clone();
        drop(store);
        let store = Store::open(dir.path(), LIMITS).unwrap();
        assert_eq!(store.directory(), &expected);
        assert_eq!(store.directory().len(), 1);
        let after = std::fs::metadata(dir.path().join(SNAPSHOT_FILE))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(written, after);
    }

    #[test]
    fn a_damaged_snapshot_stops_the_open_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), LIMITS).unwrap();
        store.update(update("1", &["A10"])).unwrap();
        drop(store);
        let path = dir.path().join(SNAPSHOT_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let err = Store::open(dir.path(), LIMITS).unwrap_err();
        assert!(matches!(err, GslError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(SNAPSHOT_FILE), "{err}");
    }

    #[test]
    fn a_failed_write_is_undone_and_poisons_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), LIMITS).unwrap();
        store.update(update("1", &["A10"])).unwrap();
        // A directory where the temporary file should go makes the write fail.
        let tmp = dir
            .path()
            .join(format!("{SNAPSHOT_FILE}{}", file::TMP_SUFFIX));
        std::fs::create_dir(&tmp).unwrap();
        let err = store.update(update("2", &["A10"])).unwrap_err();
        assert_eq!(err.status, Status::StorageError);
        assert_eq!(store.directory().len(), 1);
        std::fs::remove_dir(&tmp).unwrap();
        let err = store.update(update("3", &["A10"])).unwrap_err();
        assert!(err.message.contains("until a restart"), "{err}");
    }
}
