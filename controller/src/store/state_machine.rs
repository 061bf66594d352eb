//! The applied state of one node and its snapshot: openraft's `RaftStateMachine`.
//!
//! The state lives in memory, as an `Arc<ClusterState>` that [`crate::Controller::state`]
//! hands out; applying a batch updates it copy-on-write and publishes the result on a
//! `watch` channel. It is made durable only by snapshots: after a restart openraft applies
//! the log again from the snapshot's last log id, which gives the same state because
//! [`ClusterState::apply`] is deterministic.
//!
//! # Snapshot durability
//!
//! A snapshot built here, or installed from the leader, is written to `snapshot` with
//! [`svc::file::write_atomically`] (temp file, fsync, rename, fsync of the directory) before
//! openraft hears of it, so openraft only purges log entries that a durable snapshot
//! covers. The file holds the state with its [`SnapshotMeta`]: the last applied log id and
//! the membership at that point, which a restarted node needs before it reads the log.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, BasicNode, EntryPayload, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{SNAPSHOT_FILE, SNAPSHOT_MAGIC, StoreError};
use crate::state::ClusterState;
use crate::types::{Applied, Entry, LogId, StorageError, TypeConfig};

type Meta = SnapshotMeta<u64, BasicNode>;

/// The snapshot file's body.
#[derive(Deserialize)]
struct SnapshotFile {
    meta: Meta,
    state: ClusterState,
}

/// [`SnapshotFile`] by reference, for writing; serialises the same.
#[derive(Serialize)]
struct SnapshotFileRef<'a> {
    meta: &'a Meta,
    state: &'a ClusterState,
}

/// The state machine; clones share it (openraft takes one as the snapshot builder).
#[derive(Clone, Debug)]
pub(crate) struct StateMachineStore {
    machine: Arc<Mutex<Machine>>,
    path: PathBuf,
    published: Arc<watch::Sender<Arc<ClusterState>>>,
}

#[derive(Debug, Default)]
struct Machine {
    state: Arc<ClusterState>,
    last_applied: Option<LogId>,
    membership: StoredMembership<u64, BasicNode>,
    /// The latest snapshot, with the state as it is sent to a follower.
    snapshot: Option<(Meta, Vec<u8>)>,
    /// Snapshots built by this process, to make snapshot ids unique.
    built: u64,
}

impl StateMachineStore {
    /// Opens the state machine of `dir` at its snapshot, if there is one.
    pub(crate) fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(SNAPSHOT_FILE);
        let mut machine = Machine::default();
        if let Some(file) = super::read_small::<SnapshotFile>(&path, SNAPSHOT_MAGIC)? {
            let data = serde_json::to_vec(&file.state).map_err(|e| StoreError::Damaged {
                path: path.clone(),
                offset: 0,
                reason: e.to_string(),
            })?;
            machine.last_applied = file.meta.last_log_id;
            machine.membership = file.meta.last_membership.clone();
            machine.state = Arc::new(file.state);
            machine.snapshot = Some((file.meta, data));
        }
        let (published, _) = watch::channel(Arc::clone(&machine.state));
        Ok(Self {
            machine: Arc::new(Mutex::new(machine)),
            path,
            published: Arc::new(published),
        })
    }

    /// The applied state, updated after every applied batch.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.published.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, Machine> {
        // Every update completes under the lock or returns an error before changing
        // anything; a panic elsewhere cannot leave it half-done.
        self.machine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, state: Arc<ClusterState>) {
        // No subscriber is fine: the controller may not have asked yet.
        self.published.send_replace(state);
    }

    /// Writes `state` at `meta` to the snapshot file, durably.
    fn persist(&self, meta: &Meta, state: &ClusterState) -> std::io::Result<()> {
        let file = SnapshotFileRef { meta, state };
        super::encode_small(&file, SNAPSHOT_MAGIC)
            .and_then(|bytes| svc::file::write_atomically(&self.path, &bytes))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // Held throughout, so the file and the current snapshot cannot go back to an older
        // state when an install from the leader runs at the same time.
        let mut machine = self.lock();
        machine.built += 1;
        let index = machine.last_applied.map_or(0, |id| id.index);
        let meta = Meta {
            last_log_id: machine.last_applied,
            last_membership: machine.membership.clone(),
            snapshot_id: format!("{index}-{}", machine.built),
        };
        let data = serde_json::to_vec(&*machine.state).map_err(|e| {
            StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&e))
        })?;
        self.persist(&meta, &machine.state)
            .map_err(|e| write_failed(&meta, &e))?;
        machine.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<u64, BasicNode>), StorageError> {
        let machine = self.lock();
        Ok((machine.last_applied, machine.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut machine = self.lock();
        let mut results = Vec::new();
        for entry in entries {
            machine.last_applied = Some(entry.log_id);
            let result = match entry.payload {
                EntryPayload::Blank => Applied(None),
                EntryPayload::Normal(command) => {
                    Applied(Some(Arc::make_mut(&mut machine.state).apply(&command)))
                }
                EntryPayload::Membership(membership) => {
                    machine.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Applied(None)
                }
            };
            results.push(result);
        }
        let state = Arc::clone(&machine.state);
        drop(machine);
        self.publish(state);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let state: ClusterState = serde_json::from_slice(&data).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e))
        })?;
        let mut machine = self.lock();
        self.persist(meta, &state)
            .map_err(|e| write_failed(meta, &e))?;
        machine.state = Arc::new(state);
        machine.last_applied = meta.last_log_id;
        machine.membership = meta.last_membership.clone();
        machine.snapshot = Some((meta.clone(), data));
        let state = Arc::clone(&machine.state);
        drop(machine);
        self.publish(state);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.lock().snapshot.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}

fn write_failed(meta: &Meta, e: &std::io::Error) -> StorageError {
    StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(e)).into()
}

#[cfg(test)]
mod tests {
    use openraft::testing::log_id;
    use openraft::{Membership, RaftSnapshotBuilder};

    use super::*;
    use crate::state::Command;

    fn register(index: u64, broker: &str) -> Entry {
        Entry {
            log_id: log_id(1, 1, index),
            payload: EntryPayload::Normal(Command::RegisterBroker {
                broker: broker.into(),
                addr: "h:1".into(),
                cluster: "c".into(),
                area: "a".into(),
                shards: 1,
            }),
        }
    }

    #[tokio::test]
    async fn apply_publishes_and_a_snapshot_restores_the_state_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut machine = StateMachineStore::open(dir.path()).unwrap();
        let published = machine.subscribe();
        let membership = Entry {
            log_id: log_id(1, 1, 1),
            payload: EntryPayload::Membership(Membership::new(
                vec![[1u64].into_iter().collect()],
                None,
            )),
        };
        let results = machine
            .apply([membership, register(2, "a"), register(3, "a")])
            .await
            .unwrap();
        assert_eq!(results[0], Applied(None));
        assert_eq!(
            results[2],
            Applied(Some(Ok(crate::Outcome::BrokerRegistered {
                created: false
            })))
        );
        assert!(published.borrow().brokers.contains_key("a"));

        let snapshot = machine.build_snapshot().await.unwrap();
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 1, 3)));
        // Applied after the snapshot: not in the file, replayed from the log after a restart.
        machine.apply([register(4, "b")]).await.unwrap();
        drop(machine);

        let mut machine = StateMachineStore::open(dir.path()).unwrap();
        let (applied, membership) = machine.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(1, 1, 3)));
        assert_eq!(*membership.log_id(), Some(log_id(1, 1, 1)));
        let state = machine.subscribe().borrow().clone();
        assert_eq!(state.brokers.keys().collect::<Vec<_>>(), ["a"]);
        let current = machine.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, snapshot.meta);
    }

    #[tokio::test]
    async fn an_installed_snapshot_replaces_the_state_and_is_durable() {
        let source_dir = tempfile::tempdir().unwrap();
        let mut source = StateMachineStore::open(source_dir.path()).unwrap();
        source.apply([register(1, "x")]).await.unwrap();
        let snapshot = source.build_snapshot().await.unwrap();

        let dir = tempfile::tempdir().unwrap();
        let mut machine = StateMachineStore::open(dir.path()).unwrap();
        machine.apply([register(1, "old")]).await.unwrap();
        machine
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .unwrap();
        let state = machine.subscribe().borrow().clone();
        assert_eq!(state.brokers.keys().collect::<Vec<_>>(), ["x"]);
        drop(machine);
        let machine = StateMachineStore::open(dir.path()).unwrap();
        assert_eq!(*machine.subscribe().borrow(), state);
    }
}
