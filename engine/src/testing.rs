//! Test doubles for the log's IO seam, usable from integration tests.
//!
//! [`FaultyStorage`] keeps files in memory and remembers which writes were made durable, so a
//! test can inject short writes, write and fdatasync errors, and crashes that keep only synced
//! data plus a torn prefix of unsynced writes; a fresh `Log` then opens on the same storage.
//! File locks are modelled too: a crash or a process restart releases them all, as the kernel
//! does for a dead process.

use std::{
    cell::{Cell, RefCell},
    collections::{BTreeMap, BTreeSet},
    io,
    path::{Path, PathBuf},
    rc::Rc,
};

use bytes::Bytes;

use crate::log::storage::{IoBuffer, Storage};

/// Alignment [`FaultyStorage`] reports unless configured otherwise: a typical device block.
pub const DEFAULT_ALIGNMENT: u64 = 4096;

/// One change to a file not yet covered by an fdatasync.
#[derive(Debug, Clone)]
enum Change {
    Write { pos: u64, bytes: Vec<u8> },
    Truncate { len: u64 },
}

impl Change {
    fn apply(&self, data: &mut Vec<u8>) {
        match self {
            Change::Write { pos, bytes } => {
                let pos = *pos as usize;
                if data.len() < pos + bytes.len() {
                    data.resize(pos + bytes.len(), 0);
                }
                data[pos..pos + bytes.len()].copy_from_slice(bytes);
            }
            Change::Truncate { len } => data.resize(*len as usize, 0),
        }
    }

    fn weight(&self) -> u64 {
        match self {
            Change::Write { bytes, .. } => bytes.len() as u64,
            Change::Truncate { .. } => 0,
        }
    }
}

/// Contents of one in-memory file.
#[derive(Debug, Default)]
struct MemFile {
    /// What reads see now.
    data: Vec<u8>,
    /// What survives a crash for sure: the content as of the last fdatasync.
    synced: Vec<u8>,
    /// Changes since the last fdatasync, oldest first.
    unsynced: Vec<Change>,
}

/// A handle to an open in-memory file.
#[derive(Debug, Clone)]
pub struct MemHandle {
    path: PathBuf,
    file: Rc<RefCell<MemFile>>,
}

#[derive(Debug, Default)]
struct State {
    /// Crashes and restarts so far: the current process (see [`FaultyStorage`]).
    process: u64,
    /// Current directory entries.
    files: BTreeMap<PathBuf, Rc<RefCell<MemFile>>>,
    /// Directory entries as of each file's directory's last fsync: what a crash keeps.
    durable_names: BTreeMap<PathBuf, Rc<RefCell<MemFile>>>,
    dirs: BTreeSet<PathBuf>,
    /// Locked paths, each with the token of the [`MemLock`] holding it.
    locks: BTreeMap<PathBuf, u64>,
    /// Token of the next lock taken.
    next_lock_token: u64,
    alignment: u64,
    faults: Faults,
    stats: StorageStats,
}

#[derive(Debug, Default)]
struct Faults {
    /// Fail the fdatasync after this many more succeed.
    fdatasync_error_after: Option<u64>,
    /// Fail the write after this many more succeed.
    write_error_after: Option<u64>,
    /// Make the next write this many bytes short (at least one byte is still written).
    short_write_next: Option<usize>,
    /// Every write fails with `StorageFull`, as on a full disk.
    disk_full: bool,
}

/// Counts of operations, for tests that check how much IO a workload caused.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StorageStats {
    /// fdatasync calls on files (successful or not).
    pub fdatasyncs: u64,
    /// write_at calls.
    pub writes: u64,
    /// Directory fsyncs.
    pub dir_fsyncs: u64,
    /// Files created.
    pub creates: u64,
    /// Files removed.
    pub removes: u64,
}

/// In-memory storage with injectable faults. Clones share the same files.
///
/// A crash or restart ends the simulated process: clones taken before it (held by the logs of
/// that process, and their committer tasks, which a real crash would have killed) fail every
/// write from then on, so they cannot change what the next process finds. The handle
/// [`FaultyStorage::crash`] or [`FaultyStorage::restart`] is called on, and its later clones,
/// belong to the new process.
#[derive(Debug, Clone)]
pub struct FaultyStorage {
    state: Rc<RefCell<State>>,
    /// The process this handle belongs to: the number of crashes and restarts before it.
    process: Cell<u64>,
}

impl Default for FaultyStorage {
    fn default() -> Self {
        Self::new()
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl FaultyStorage {
    /// Empty storage with [`DEFAULT_ALIGNMENT`].
    pub fn new() -> Self {
        Self::with_alignment(DEFAULT_ALIGNMENT)
    }

    /// Empty storage reporting `alignment` (a power of two) for writes.
    pub fn with_alignment(alignment: u64) -> Self {
        assert!(
            alignment.is_power_of_two(),
            "alignment must be a power of two"
        );
        Self {
            state: Rc::new(RefCell::new(State {
                alignment,
                ..State::default()
            })),
            process: Cell::new(0),
        }
    }

    /// Fails when this handle belongs to a process that crashed or restarted.
    fn alive(&self) -> io::Result<()> {
        if self.process.get() == self.state.borrow().process {
            Ok(())
        } else {
            Err(io::Error::other(
                "the simulated process of this handle crashed",
            ))
        }
    }

    /// Ends the simulated process: older handles are dead, this one lives on.
    fn next_process(&self, state: &mut State) {
        state.process += 1;
        self.process.set(state.process);
    }

    /// The next fdatasync after `successes` more successful ones fails with an IO error.
    pub fn fail_fdatasync_after(&self, successes: u64) {
        self.state.borrow_mut().faults.fdatasync_error_after = Some(successes);
    }

    /// The next write after `successes` more successful ones fails with an IO error.
    pub fn fail_write_after(&self, successes: u64) {
        self.state.borrow_mut().faults.write_error_after = Some(successes);
    }

    /// The next write stores and reports `missing` bytes fewer than asked (at least one byte
    /// is still written), as a short write from the kernel would.
    pub fn short_write_next(&self, missing: usize) {
        self.state.borrow_mut().faults.short_write_next = Some(missing);
    }

    /// Every write fails with [`io::ErrorKind::StorageFull`] (`ENOSPC`) until
    /// [`Self::clear_faults`]; reads, syncs and truncates go on, as on a full disk.
    pub fn set_disk_full(&self) {
        self.state.borrow_mut().faults.disk_full = true;
    }

    /// Clears all pending faults.
    pub fn clear_faults(&self) {
        self.state.borrow_mut().faults = Faults::default();
    }

    /// Operation counts so far.
    pub fn stats(&self) -> StorageStats {
        self.state.borrow().stats
    }

    /// Current content of the file at `path`, if any.
    pub fn file_contents(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.state.borrow();
        state.files.get(path).map(|f| f.borrow().data.clone())
    }

    /// Content of the file at `path` as of its last fdatasync: what a power loss keeps for
    /// sure (if its name is durable too).
    pub fn synced_contents(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.state.borrow();
        state.files.get(path).map(|f| f.borrow().synced.clone())
    }

    /// Replaces the content of the file at `path` (creating it), as if made durable: for
    /// tests that corrupt files between a close and an open.
    pub fn set_file_contents(&self, path: &Path, data: Vec<u8>) {
        let mut state = self.state.borrow_mut();
        let file = Rc::new(RefCell::new(MemFile {
            synced: data.clone(),
            data,
            unsynced: Vec::new(),
        }));
        state.files.insert(path.to_path_buf(), file.clone());
        state.durable_names.insert(path.to_path_buf(), file);
    }

    /// Removes the file at `path` durably: for tests that delete an index between runs.
    pub fn delete_file(&self, path: &Path) {
        let mut state = self.state.borrow_mut();
        state.files.remove(path);
        state.durable_names.remove(path);
    }

    /// Names of the files present now, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.state.borrow().files.keys().cloned().collect()
    }

    /// Simulates a power loss, which also ends the process (its locks are released). Every
    /// file keeps its synced content plus the first
    /// `keep(path, unsynced_bytes)` bytes of its unsynced writes, applied in order (the last
    /// one torn); directory entries not made durable by a directory fsync are lost (created
    /// files vanish, removed files come back). Faults are cleared. Open handles from before
    /// the crash must not be used again.
    pub fn crash(&self, mut keep: impl FnMut(&Path, u64) -> u64) {
        let mut state = self.state.borrow_mut();
        let mut files = BTreeMap::new();
        for (path, file) in &state.durable_names {
            let old = file.borrow();
            let unsynced_bytes: u64 = old.unsynced.iter().map(Change::weight).sum();
            let mut budget = keep(path, unsynced_bytes).min(unsynced_bytes);
            let mut data = old.synced.clone();
            for change in &old.unsynced {
                match change {
                    Change::Truncate { .. } => change.apply(&mut data),
                    Change::Write { pos, bytes } => {
                        if budget == 0 {
                            break;
                        }
                        let n = (budget as usize).min(bytes.len());
                        Change::Write {
                            pos: *pos,
                            bytes: bytes[..n].to_vec(),
                        }
                        .apply(&mut data);
                        budget -= n as u64;
                    }
                }
            }
            files.insert(
                path.clone(),
                Rc::new(RefCell::new(MemFile {
                    synced: data.clone(),
                    data,
                    unsynced: Vec::new(),
                })),
            );
        }
        state.durable_names = files.clone();
        state.files = files;
        state.faults = Faults::default();
        state.locks.clear();
        self.next_process(&mut state);
    }

    /// Simulates the death of the process without a power loss: its locks are released and
    /// faults cleared; files keep everything written, synced or not.
    pub fn restart(&self) {
        let mut state = self.state.borrow_mut();
        state.locks.clear();
        state.faults = Faults::default();
        self.next_process(&mut state);
    }

    /// Whether `path` is locked now.
    pub fn is_locked(&self, path: &Path) -> bool {
        self.state.borrow().locks.contains_key(path)
    }

    /// A crash that keeps a pseudo-random torn prefix of each file's unsynced writes.
    pub fn crash_random(&self, seed: u64) {
        let mut x = seed | 1;
        self.crash(|_, unsynced| {
            // xorshift64: deterministic for a seed, no dependency.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if unsynced == 0 { 0 } else { x % (unsynced + 1) }
        });
    }

    fn handle(&self, path: &Path) -> io::Result<MemHandle> {
        let state = self.state.borrow();
        let file = state.files.get(path).ok_or_else(|| not_found(path))?;
        Ok(MemHandle {
            path: path.to_path_buf(),
            file: file.clone(),
        })
    }
}

/// A lock taken on [`FaultyStorage`]; dropping it releases the lock unless a crash or restart
/// already did (and someone else may hold it now).
#[derive(Debug)]
pub struct MemLock {
    state: std::rc::Weak<RefCell<State>>,
    path: PathBuf,
    token: u64,
}

impl Drop for MemLock {
    fn drop(&mut self) {
        if let Some(state) = self.state.upgrade() {
            let mut state = state.borrow_mut();
            if state.locks.get(&self.path) == Some(&self.token) {
                state.locks.remove(&self.path);
            }
        }
    }
}

/// An aligned-by-contract buffer for [`FaultyStorage`].
#[derive(Debug)]
pub struct MemBuffer(Vec<u8>);

impl AsRef<[u8]> for MemBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl AsMut<[u8]> for MemBuffer {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl IoBuffer for MemBuffer {
    fn truncate(&mut self, len: usize) {
        self.0.truncate(len);
    }
}

impl Storage for FaultyStorage {
    type File = MemHandle;
    type Buffer = MemBuffer;
    type Lock = MemLock;

    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.alive()?;
        self.state.borrow_mut().dirs.insert(dir.to_path_buf());
        Ok(())
    }

    async fn lock(&self, path: &Path) -> io::Result<MemLock> {
        self.alive()?;
        let mut state = self.state.borrow_mut();
        if state.locks.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is locked", path.display()),
            ));
        }
        let parent = path.parent().unwrap_or(Path::new(""));
        if !state.dirs.contains(parent) {
            return Err(not_found(parent));
        }
        if !state.files.contains_key(path) {
            // Like open(O_CREAT): the file exists from now on, its name not yet durable.
            state.files.insert(
                path.to_path_buf(),
                Rc::new(RefCell::new(MemFile::default())),
            );
        }
        let token = state.next_lock_token;
        state.next_lock_token += 1;
        state.locks.insert(path.to_path_buf(), token);
        Ok(MemLock {
            state: Rc::downgrade(&self.state),
            path: path.to_path_buf(),
            token,
        })
    }

    async fn create(&self, path: &Path) -> io::Result<MemHandle> {
        self.alive()?;
        let mut state = self.state.borrow_mut();
        let parent = path.parent().unwrap_or(Path::new(""));
        if !state.dirs.contains(parent) {
            return Err(not_found(parent));
        }
        state.stats.creates += 1;
        let existing = state.files.get(path).cloned();
        let file = match existing {
            Some(file) => {
                let mut f = file.borrow_mut();
                f.data.clear();
                f.unsynced.push(Change::Truncate { len: 0 });
                drop(f);
                file
            }
            None => {
                let file = Rc::new(RefCell::new(MemFile::default()));
                state.files.insert(path.to_path_buf(), file.clone());
                file
            }
        };
        Ok(MemHandle {
            path: path.to_path_buf(),
            file,
        })
    }

    async fn open(&self, path: &Path) -> io::Result<MemHandle> {
        self.handle(path)
    }

    fn alignment(&self, _file: &MemHandle) -> u64 {
        self.state.borrow().alignment
    }

    fn alloc_buffer(&self, len: usize) -> MemBuffer {
        // Poison the content so a caller relying on zeroed buffers is caught.
        MemBuffer(vec![0xAB; len])
    }

    async fn write_at(&self, file: &MemHandle, buf: Rc<MemBuffer>, pos: u64) -> io::Result<usize> {
        self.alive()?;
        let mut state = self.state.borrow_mut();
        let alignment = state.alignment;
        if pos % alignment != 0 || buf.0.len() as u64 % alignment != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "unaligned write of {} bytes at {pos} to {}",
                    buf.0.len(),
                    file.path.display()
                ),
            ));
        }
        state.stats.writes += 1;
        if state.faults.disk_full {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "injected: no space left on device",
            ));
        }
        if let Some(n) = state.faults.write_error_after.as_mut() {
            if *n == 0 {
                state.faults.write_error_after = None;
                return Err(io::Error::other("injected write error"));
            }
            *n -= 1;
        }
        let mut len = buf.0.len();
        if let Some(missing) = state.faults.short_write_next.take() {
            len = len.saturating_sub(missing).max(1);
        }
        let change = Change::Write {
            pos,
            bytes: buf.0[..len].to_vec(),
        };
        let mut f = file.file.borrow_mut();
        change.apply(&mut f.data);
        f.unsynced.push(change);
        Ok(len)
    }

    async fn read_at(&self, file: &MemHandle, pos: u64, len: usize) -> io::Result<Bytes> {
        let f = file.file.borrow();
        let start = (pos as usize).min(f.data.len());
        let end = start.saturating_add(len).min(f.data.len());
        Ok(Bytes::copy_from_slice(&f.data[start..end]))
    }

    async fn fdatasync(&self, file: &MemHandle) -> io::Result<()> {
        self.alive()?;
        let mut state = self.state.borrow_mut();
        state.stats.fdatasyncs += 1;
        if let Some(n) = state.faults.fdatasync_error_after.as_mut() {
            if *n == 0 {
                state.faults.fdatasync_error_after = None;
                return Err(io::Error::other("injected fdatasync error"));
            }
            *n -= 1;
        }
        let mut f = file.file.borrow_mut();
        let changes = std::mem::take(&mut f.unsynced);
        for change in &changes {
            change.apply(&mut f.synced);
        }
        Ok(())
    }

    async fn truncate(&self, file: &MemHandle, len: u64) -> io::Result<()> {
        self.alive()?;
        let change = Change::Truncate { len };
        let mut f = file.file.borrow_mut();
        change.apply(&mut f.data);
        f.unsynced.push(change);
        Ok(())
    }

    async fn len(&self, file: &MemHandle) -> io::Result<u64> {
        Ok(file.file.borrow().data.len() as u64)
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        self.alive()?;
        let mut state = self.state.borrow_mut();
        state.stats.removes += 1;
        state
            .files
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    async fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.state.borrow();
        if !state.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(state
            .files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    async fn fsync_dir(&self, dir: &Path) -> io::Result<()> {
        self.alive()?;
        let mut state = self.state.borrow_mut();
        state.stats.dir_fsyncs += 1;
        let state = &mut *state;
        state.durable_names.retain(|p, _| p.parent() != Some(dir));
        for (path, file) in &state.files {
            if path.parent() == Some(dir) {
                state.durable_names.insert(path.clone(), file.clone());
            }
        }
        Ok(())
    }
}
