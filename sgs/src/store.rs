//! The registry of services, durable: every change is on disk before it is answered.
//!
//! Stored as one snapshot file (`services.sgs`, format and durability protocol in
//! [`svc::file`]) rewritten whole on every change, rather than in an embedded database:
//! changes are operator actions (a few a day), the registry of 10,000 services is about
//! 2 MB, so a rewrite costs milliseconds next to the broker round trips of the deploy that
//! caused it; recovery is reading one checksummed file; and there is no second storage engine
//! to operate, upgrade and trust. A log of changes would pay off only at change rates an SGS
//! never sees.
//!
//! Memory never runs ahead of disk: a change is applied, the snapshot written, and the change
//! undone if the write fails. A failed write or fsync poisons the store: later changes are
//! refused with `StorageError` until a restart recovers from what is on disk.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use log::error;
use protocol::codes::Status;
use protocol::control::{self, ServiceRecord};
use protocol::names::ServiceId;

use crate::error::SgsError;
use svc::file;

/// The snapshot's file name in the data directory.
pub const SNAPSHOT_FILE: &str = "services.sgs";
/// The snapshot's magic: an SGS registry, format 1.
pub const MAGIC: &[u8; 8] = b"DFBSGS01";

/// A change that could not be made durable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StorageFailure(pub String);

impl StorageFailure {
    /// The status to answer with.
    pub fn status(&self) -> Status {
        Status::StorageError
    }
}

/// The durable registry. Owns the data directory's lock.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    services: BTreeMap<ServiceId, ServiceRecord>,
    poisoned: Option<String>,
    _lock: File,
}

impl Store {
    /// Opens (or creates) the registry in `dir`.
    pub fn open(dir: &Path) -> Result<Self, SgsError> {
        let storage = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SgsError::Storage { path, source }
        };
        let lock = file::open_dir(dir).map_err(storage(dir))?;
        let path = dir.join(SNAPSHOT_FILE);
        let mut services = BTreeMap::new();
        if let Some(bytes) = file::read_snapshot(&path).map_err(storage(&path))? {
            let corrupt = |reason: String| SgsError::Corrupt {
                path: path.clone(),
                reason,
            };
            let body = file::decode_snapshot(MAGIC, &bytes).map_err(corrupt)?;
            let records: Vec<ServiceRecord> =
                control::decode(body).map_err(|e| corrupt(e.to_string()))?;
            for record in records {
                record
                    .validate()
                    .map_err(|e| corrupt(format!("service {:?}: {e}", record.service_id)))?;
                let id = record.service_id().map_err(|e| corrupt(e.to_string()))?;
                services.insert(id, record);
            }
        }
        Ok(Self {
            path,
            services,
            poisoned: None,
            _lock: lock,
        })
    }

    /// Number of services registered.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// True when no service is registered.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// One service's record.
    pub fn get(&self, service: &ServiceId) -> Option<&ServiceRecord> {
        self.services.get(service)
    }

    /// Every record, sorted by service id.
    pub fn records(&self) -> Vec<ServiceRecord> {
        self.services.values().cloned().collect()
    }

    /// Stores `record` (already checked) under its id, durably.
    pub fn put(&mut self, service: ServiceId, record: ServiceRecord) -> Result<(), StorageFailure> {
        if let Some(reason) = &self.poisoned {
            return Err(StorageFailure(format!(
                "changes are refused until a restart: {reason}"
            )));
        }
        let previous = self.services.insert(service.clone(), record);
        if let Err(reason) = self.persist() {
            match previous {
                Some(previous) => self.services.insert(service, previous),
                None => self.services.remove(&service),
            };
            error!(
                "SGS registry {}: {reason}; refusing changes until a restart",
                self.path.display()
            );
            self.poisoned = Some(reason.clone());
            return Err(StorageFailure(reason));
        }
        Ok(())
    }

    fn persist(&self) -> Result<(), String> {
        let body = control::encode(&self.records()).map_err(|e| e.to_string())?;
        let bytes = file::encode_snapshot(MAGIC, &body);
        file::write_atomically(&self.path, &bytes)
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::control::{FlushMode, ServiceState};

    fn record(id: &str) -> ServiceRecord {
        ServiceRecord {
            service_id: id.into(),
            name: format!("svc {id}"),
            owner: "ops".into(),
            deployed_areas: vec!["A10".into()],
            queue_count: 4,
            max_queue_depth: 500,
            flush_mode: FlushMode::Sync,
            state: ServiceState::Applied,
        }
    }

    #[test]
    fn a_reopened_store_has_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        for id in ["2", "1"] {
            store.put(id.parse().unwrap(), record(id)).unwrap();
        }
        let mut deployed = record("1");
        deployed.state = ServiceState::Deployed;
        store.put("1".parse().unwrap(), deployed.clone()).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.records(), [deployed, record("2")]);
    }

    #[test]
    fn damage_stops_the_open_and_a_failed_write_poisons() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store.put("1".parse().unwrap(), record("1")).unwrap();
        let tmp = dir
            .path()
            .join(format!("{SNAPSHOT_FILE}{}", file::TMP_SUFFIX));
        std::fs::create_dir(&tmp).unwrap();
        store.put("2".parse().unwrap(), record("2")).unwrap_err();
        assert_eq!(store.len(), 1);
        std::fs::remove_dir(&tmp).unwrap();
        let err = store.put("3".parse().unwrap(), record("3")).unwrap_err();
        assert!(err.0.contains("until a restart"), "{err}");
        drop(store);
        let path = dir.path().join(SNAPSHOT_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, SgsError::Corrupt { .. }), "{err}");
    }
}
