//! Topics: which shard owns which queue, and the durable registry of topic configurations.
//!
//! Shard 0 is the only writer of the registry file `<data>/topics.rkyv` (an archived
//! `Vec<TopicConfig>`). Every shard reads it once at start; afterwards shard 0 broadcasts each
//! change over the mesh and waits until every shard applied it before answering the admin.
//!
//! Durability protocol of a registry change:
//! 1. write the whole registry to `topics.rkyv.tmp`;
//! 2. fsync `topics.rkyv.tmp`;
//! 3. rename it over `topics.rkyv` (atomic: a crash leaves the old or the new file);
//! 4. fsync `<data>` so the rename itself survives.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use protocol::codes::Status;
use protocol::control::{self, TopicConfig};

use crate::error::{BrokerError, Reject};
use crate::reserve::Reserve;

/// Name of the registry file in the data directory.
pub const REGISTRY_FILE: &str = "topics.rkyv";

/// First bytes of a registry written since topics have replicas: an archived
/// `Vec<TopicConfig>` follows. A registry without them is the older archived
/// `Vec<TopicConfigV1>`, read once and rewritten in this format at the next change.
const REGISTRY_MAGIC: &[u8; 8] = b"DFBTOP02";

/// The shard that owns queue `queue_id` of `topic` (see [`protocol::routing`]).
pub fn owner_shard(topic: &str, queue_id: u32, shard_count: usize) -> usize {
    protocol::routing::queue_shard(topic, queue_id, shard_count)
}

/// Directory of one queue's log.
pub fn queue_dir(data_dir: &Path, topic: &str, queue_id: u32) -> PathBuf {
    data_dir
        .join("queues")
        .join(topic)
        .join(queue_id.to_string())
}

/// Directory of all of a topic's queues.
pub fn topic_dir(data_dir: &Path, topic: &str) -> PathBuf {
    data_dir.join("queues").join(topic)
}

/// Where deleted topics' data waits to be removed, under the data directory.
const TRASH_DIR: &str = "trash";

/// Removes a deleted topic's data without holding up the shard: the directory is renamed into
/// `<data>/trash/` (one metadata operation) and removed by a background thread, as a
/// `remove_dir_all` of a large topic takes seconds of the executor, long enough for clients
/// and nameservers to give the broker up. What a crash leaves in the trash is removed at the
/// next start ([`empty_trash`]).
pub fn discard_topic_dir(data_dir: &Path, topic: &str) {
    let dir = topic_dir(data_dir, topic);
    let trash = data_dir.join(TRASH_DIR);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let doomed = trash.join(format!("{topic}.{nanos}"));
    let moved = std::fs::create_dir_all(&trash).and_then(|()| std::fs::rename(&dir, &doomed));
    match moved {
        Ok(()) => remove_in_background(doomed),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            log::warn!(
                "moving {} to the trash: {e}; removing it in place",
                dir.display()
            );
            remove_in_background(dir);
        }
    }
}

/// Removes, in the background, what a previous run left in `<data>/trash/`: the entries
/// there now, not the directory, which deletes of this run may be moving into meanwhile.
pub fn empty_trash(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir.join(TRASH_DIR)) else {
        return;
    };
    for entry in entries.flatten() {
        remove_in_background(entry.path());
    }
}

fn remove_in_background(dir: PathBuf) {
    let spawned = std::thread::Builder::new()
        .name("defibus-trash".into())
        .spawn(move || {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    log::warn!("removing {}: {e}", dir.display());
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("no thread to remove deleted data: {e}");
    }
}

/// Reads the registry; an absent file is an empty registry.
pub fn load_registry(data_dir: &Path) -> Result<BTreeMap<String, TopicConfig>, BrokerError> {
    let path = data_dir.join(REGISTRY_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => {
            return Err(BrokerError::Io {
                op: "read topic registry",
                path,
                source,
            });
        }
    };
    let corrupt = |e: control::ControlError| BrokerError::Config {
        reason: format!("topic registry {} is corrupt: {e}", path.display()),
    };
    let configs = match bytes.strip_prefix(REGISTRY_MAGIC) {
        Some(archive) => control::decode::<Vec<TopicConfig>>(archive).map_err(corrupt)?,
        None => {
            let v1 = control::decode::<Vec<control::TopicConfigV1>>(&bytes).map_err(corrupt)?;
            log::info!(
                "topic registry {} predates replication: its {} topic(s) have one replica",
                path.display(),
                v1.len()
            );
            v1.into_iter().map(TopicConfig::from).collect()
        }
    };
    Ok(configs.into_iter().map(|c| (c.topic.clone(), c)).collect())
}

/// Writes the registry atomically (see the module's durability protocol).
pub fn store_registry(
    data_dir: &Path,
    topics: &BTreeMap<String, TopicConfig>,
) -> Result<(), BrokerError> {
    let configs: Vec<TopicConfig> = topics.values().cloned().collect();
    let archive = control::encode(&configs).map_err(|e| BrokerError::Config {
        reason: format!("cannot encode topic registry: {e}"),
    })?;
    let mut bytes = Vec::with_capacity(REGISTRY_MAGIC.len() + archive.len());
    bytes.extend_from_slice(REGISTRY_MAGIC);
    bytes.extend_from_slice(&archive);
    let path = data_dir.join(REGISTRY_FILE);
    let tmp = data_dir.join(format!("{REGISTRY_FILE}.tmp"));
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| BrokerError::Io { op, path, source }
    };
    let mut file = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    let written = file
        .write_all(&bytes)
        .map_err(io("write", &tmp))
        .and_then(|()| file.sync_all().map_err(io("fsync", &tmp)));
    drop(file);
    if written.is_err() {
        // A half-written temporary file holds blocks a retry (with the reserve) may need.
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
    std::fs::File::open(data_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io("fsync directory", data_dir))
}

/// Shard 0's registry of topic configurations, the source of every topic change: each
/// change is persisted (see the module's durability protocol) before it counts, and undone in
/// memory when persisting fails. Other shards hold an empty one.
pub(crate) struct Registry {
    data_dir: PathBuf,
    topics: RefCell<BTreeMap<String, TopicConfig>>,
    /// Space a rewrite after a delete may take on a full disk (shard 0 only).
    reserve: Option<Reserve>,
}

impl Registry {
    /// The registry of `data_dir`, holding `topics` as loaded; the writer (shard 0) keeps a
    /// space reserve for its rewrites.
    pub fn new(data_dir: &Path, topics: BTreeMap<String, TopicConfig>, writer: bool) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            topics: RefCell::new(topics),
            reserve: writer.then(|| Reserve::new(data_dir)),
        }
    }

    /// Persists `topics` after a delete, with the reserve's space if the disk is full.
    fn store_after_delete(
        &self,
        topics: &BTreeMap<String, TopicConfig>,
    ) -> Result<(), BrokerError> {
        match &self.reserve {
            Some(reserve) => reserve.write_with(|| store_registry(&self.data_dir, topics)),
            None => store_registry(&self.data_dir, topics),
        }
    }

    /// The configuration of `topic`.
    pub fn get(&self, topic: &str) -> Option<TopicConfig> {
        self.topics.borrow().get(topic).cloned()
    }

    /// Every topic with dynamic queues.
    pub fn dynamic(&self) -> Vec<TopicConfig> {
        self.topics
            .borrow()
            .values()
            .filter(|c| c.dynamic_queues)
            .cloned()
            .collect()
    }

    /// Records `config` durably: a new topic when `create`, else an update of an existing one.
    pub fn upsert(&self, config: &TopicConfig, create: bool) -> Result<(), Reject> {
        let mut topics = self.topics.borrow_mut();
        let exists = topics.contains_key(&config.topic);
        if create && exists {
            return Err(Reject::new(
                Status::TopicExists,
                format!("topic {} exists", config.topic),
            ));
        }
        if !create && !exists {
            return Err(Reject::new(
                Status::UnknownTopic,
                format!("no topic {}", config.topic),
            ));
        }
        let old = topics.insert(config.topic.clone(), config.clone());
        // Not with the reserve: a topic created on a full disk could not open its queues.
        if let Err(e) = store_registry(&self.data_dir, &topics) {
            log::error!("shard 0: persisting the topic registry: {e}");
            match old {
                Some(old) => topics.insert(config.topic.clone(), old),
                None => topics.remove(&config.topic),
            };
            return Err(Reject::new(Status::StorageError, e.to_string()));
        }
        Ok(())
    }

    /// Removes `topic` durably.
    pub fn delete(&self, topic: &str) -> Result<(), Reject> {
        let mut topics = self.topics.borrow_mut();
        let Some(old) = topics.remove(topic) else {
            return Err(Reject::new(
                Status::UnknownTopic,
                format!("no topic {topic}"),
            ));
        };
        if let Err(e) = self.store_after_delete(&topics) {
            log::error!("shard 0: persisting the topic registry: {e}");
            topics.insert(topic.to_owned(), old);
            return Err(Reject::new(Status::StorageError, e.to_string()));
        }
        Ok(())
    }
}

/// Checks an admin's topic configuration, with the status to answer when it is wrong.
pub fn validate_config(config: &TopicConfig) -> Result<(), Reject> {
    config.validate()?;
    if config.queue_count > QUEUE_COUNT_MAX {
        return Err(Reject::new(
            Status::InvalidArgument,
            format!(
                "queue_count {} exceeds {QUEUE_COUNT_MAX}",
                config.queue_count
            ),
        ));
    }
    Ok(())
}

/// Most queues a topic may have on one broker (DeFiBus dynamic queues stop at 1024).
pub const QUEUE_COUNT_MAX: u32 = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_stable_and_spreads() {
        assert_eq!(owner_shard("A10-1", 0, 1), 0);
        let owners: Vec<usize> = (0..16).map(|q| owner_shard("A10-1", q, 2)).collect();
        assert!(owners.contains(&0) && owners.contains(&1), "{owners:?}");
        assert_eq!(
            owners,
            (0..16)
                .map(|q| owner_shard("A10-1", q, 2))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_registry_from_before_replication_loads_with_one_replica_and_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = TopicConfig::new(&"A10-20190001".parse().unwrap());
        config.queue_count = 3;
        let v1 = vec![control::TopicConfigV1 {
            topic: config.topic.clone(),
            queue_count: 3,
            read_queue_count: config.read_queue_count,
            write_queue_count: config.write_queue_count,
            flush_mode: config.flush_mode,
            max_queue_depth: config.max_queue_depth,
            retention_bytes: config.retention_bytes,
            retention_age_ms: config.retention_age_ms,
            redirects: Vec::new(),
            dynamic_queues: false,
        }];
        let path = dir.path().join(REGISTRY_FILE);
        std::fs::write(&path, control::encode(&v1).unwrap()).unwrap();
        let loaded = load_registry(dir.path()).unwrap();
        assert_eq!(loaded.get(&config.topic), Some(&config));
        assert_eq!(loaded[&config.topic].replicas, 1);

        let mut replicated = config.clone();
        replicated.replicas = 3;
        replicated.acks = control::Acks::All;
        let topics = BTreeMap::from([(replicated.topic.clone(), replicated.clone())]);
        store_registry(dir.path(), &topics).unwrap();
        assert!(std::fs::read(&path).unwrap().starts_with(REGISTRY_MAGIC));
        assert_eq!(load_registry(dir.path()).unwrap(), topics);
    }

    #[test]
    fn a_deleted_topic_leaves_its_directory_at_once_and_the_trash_empties() {
        let dir = tempfile::tempdir().unwrap();
        let queue = queue_dir(dir.path(), "A10-1", 0);
        std::fs::create_dir_all(&queue).unwrap();
        std::fs::write(queue.join("00000000000000000000.log"), b"data").unwrap();
        discard_topic_dir(dir.path(), "A10-1");
        assert!(
            !topic_dir(dir.path(), "A10-1").exists(),
            "gone from queues/ at once"
        );
        let trash = dir.path().join(TRASH_DIR);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_dir(&trash).unwrap().next().is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "the trash was not emptied"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // A leftover of a crashed run is removed at the next start.
        std::fs::create_dir_all(trash.join("A10-2.1")).unwrap();
        empty_trash(dir.path());
        while trash.join("A10-2.1").exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the leftover was not removed"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        discard_topic_dir(dir.path(), "A10-3"); // Never created: nothing to do.
    }

    #[test]
    fn registry_round_trips_atomically() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_registry(dir.path()).unwrap().is_empty());
        let mut topics = BTreeMap::new();
        let config = TopicConfig::new(&"A10-1".parse().unwrap());
        topics.insert(config.topic.clone(), config);
        store_registry(dir.path(), &topics).unwrap();
        assert_eq!(load_registry(dir.path()).unwrap(), topics);
        assert!(!dir.path().join("topics.rkyv.tmp").exists());
    }
}
