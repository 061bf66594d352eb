//! The IO seam: every file operation the log performs, behind one small trait.
//!
//! [`DmaStorage`] is the product implementation on glommio's `DmaFile` (O_DIRECT, io_uring).
//! [`crate::testing::FaultyStorage`] keeps files in memory and injects faults. Keeping glommio
//! behind this seam also keeps a move to another io_uring runtime cheap.

use std::{io, path::Path, rc::Rc};

use bytes::Bytes;
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

/// File and directory operations of the log. Methods are `async` and single-threaded (the log
/// lives inside one glommio executor), so no `Send` bounds are wanted.
///
/// Writes take an aligned buffer from [`Storage::alloc_buffer`] and an aligned position; a
/// write may be short (fewer bytes than asked), which the caller must handle. The caller keeps
/// a reference to the buffer it writes (`Rc`), to finish a short write and to reuse it.
///
/// A storage is a cheap handle (`Clone`): a poisoned log reopens itself on a clone of it.
#[allow(async_fn_in_trait)] // single-threaded executor: futures are never sent across threads
pub trait Storage: Clone {
    /// An open file, readable and writable.
    type File;
    /// A buffer suitable for [`Storage::write_at`] on any file (aligned memory for O_DIRECT).
    type Buffer: IoBuffer;
    /// An exclusive lock on a file, released when dropped (or when the process dies).
    type Lock;

    /// Creates `dir` and its parents if missing.
    async fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Creates `path` if missing and locks it exclusively without waiting; fails with
    /// [`io::ErrorKind::WouldBlock`] while another holder, in this process or another, has it.
    async fn lock(&self, path: &Path) -> io::Result<Self::Lock>;
    /// Creates `path`, or truncates it to zero length if it exists, open for reading and writing.
    async fn create(&self, path: &Path) -> io::Result<Self::File>;
    /// Opens an existing `path` for reading and writing.
    async fn open(&self, path: &Path) -> io::Result<Self::File>;
    /// Alignment of positions and lengths for [`Storage::write_at`], a power of two.
    fn alignment(&self, file: &Self::File) -> u64;
    /// A buffer of `len` bytes (a multiple of the alignment); its content is unspecified.
    fn alloc_buffer(&self, len: usize) -> Self::Buffer;
    /// Writes all of `buf` at the aligned position `pos`; returns how many bytes were written.
    async fn write_at(
        &self,
        file: &Self::File,
        buf: Rc<Self::Buffer>,
        pos: u64,
    ) -> io::Result<usize>;
    /// Reads up to `len` bytes at any position; fewer at the end of the file.
    async fn read_at(&self, file: &Self::File, pos: u64, len: usize) -> io::Result<Bytes>;
    /// Makes the file's data (and the metadata needed to read it) durable.
    async fn fdatasync(&self, file: &Self::File) -> io::Result<()>;
    /// Sets the file's length.
    async fn truncate(&self, file: &Self::File, len: u64) -> io::Result<()>;
    /// The file's length in bytes.
    async fn len(&self, file: &Self::File) -> io::Result<u64>;
    /// Removes the file at `path` (open handles stay readable).
    async fn remove(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries of `dir`.
    async fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Makes creations and removals of entries in `dir` durable.
    async fn fsync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// A buffer the log copies batches into and hands to [`Storage::write_at`].
pub trait IoBuffer: AsRef<[u8]> + AsMut<[u8]> {
    /// Shortens the buffer to its first `len` bytes (at most its length); a write of it then
    /// writes only those.
    fn truncate(&mut self, len: usize);
}

impl IoBuffer for DmaBuffer {
    fn truncate(&mut self, len: usize) {
        self.trim_to_size(len);
    }
}

/// The product storage: glommio DMA files (O_DIRECT through io_uring).
#[derive(Debug, Clone, Copy, Default)]
pub struct DmaStorage;

impl Storage for DmaStorage {
    type File = DmaFile;
    type Buffer = DmaBuffer;
    type Lock = FileLock;

    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        // Runs once per open; a blocking mkdir is cheaper than another io_uring round trip.
        std::fs::create_dir_all(dir)
    }

    async fn lock(&self, path: &Path) -> io::Result<FileLock> {
        // Runs once per open; glommio has no flock.
        FileLock::try_lock(path)
    }

    async fn create(&self, path: &Path) -> io::Result<DmaFile> {
        probe_iopoll_with_data(path).await?;
        Ok(OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .dma_open(path)
            .await?)
    }

    async fn open(&self, path: &Path) -> io::Result<DmaFile> {
        probe_iopoll_with_data(path).await?;
        Ok(OpenOptions::new()
            .read(true)
            .write(true)
            .dma_open(path)
            .await?)
    }

    fn alignment(&self, file: &DmaFile) -> u64 {
        file.alignment()
    }

    fn alloc_buffer(&self, len: usize) -> DmaBuffer {
        // Not the executor's registered-buffer arena (10 MiB per executor): a log keeps its
        // write buffers for its lifetime, and a shard holds many logs.
        glommio::allocate_dma_buffer_global(len)
    }

    async fn write_at(&self, file: &DmaFile, buf: Rc<DmaBuffer>, pos: u64) -> io::Result<usize> {
        Ok(file.write_rc_at(buf, pos).await?)
    }

    async fn read_at(&self, file: &DmaFile, pos: u64, len: usize) -> io::Result<Bytes> {
        let read = file.read_at(pos, len).await?;
        Ok(Bytes::copy_from_slice(&read))
    }

    async fn fdatasync(&self, file: &DmaFile) -> io::Result<()> {
        Ok(file.fdatasync().await?)
    }

    async fn truncate(&self, file: &DmaFile, len: u64) -> io::Result<()> {
        Ok(file.truncate(len).await?)
    }

    async fn len(&self, file: &DmaFile) -> io::Result<u64> {
        Ok(file.file_size().await?)
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        Ok(glommio::io::remove(path).await?)
    }

    async fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        // Runs once per open (recovery); glommio offers no asynchronous readdir.
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    async fn fsync_dir(&self, dir: &Path) -> io::Result<()> {
        // glommio opens a directory through io_uring with no base descriptor, so a relative
        // path fails with EBADF: resolve it first.
        let dir = std::path::absolute(dir)?;
        let directory = glommio::io::Directory::open(&dir).await?;
        let synced = directory.sync().await;
        directory.close().await?;
        Ok(synced?)
    }
}

/// An exclusive `flock` on an open file, held until this is dropped (the descriptor closes) or
/// the process dies. `flock` locks belong to the open file description, so a second open of the
/// same file conflicts even within one process, unlike `fcntl` record locks.
#[derive(Debug)]
pub struct FileLock {
    _file: std::fs::File,
}

impl FileLock {
    /// Opens (creating) `path` and locks it, failing with `WouldBlock` if it is held.
    pub fn try_lock(path: &Path) -> io::Result<Self> {
        use std::os::fd::AsRawFd;

        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        flock_exclusive_nonblocking(file.as_raw_fd())?;
        Ok(Self { _file: file })
    }
}

#[allow(unsafe_code)] // flock(2) has no safe wrapper in std for our MSRV
fn flock_exclusive_nonblocking(fd: std::os::fd::RawFd) -> io::Result<()> {
    // SAFETY: flock only reads the descriptor number; `fd` is open for the whole call.
    let rc = unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        // EWOULDBLOCK maps to io::ErrorKind::WouldBlock.
        Err(io::Error::last_os_error())
    }
}

/// One block of data in the probe file.
const PROBE_BYTES: usize = 4096;

thread_local! {
    /// Devices on which this executor thread already let glommio probe for iopoll.
    static PROBED_DEVICES: std::cell::RefCell<std::collections::HashSet<u64>> =
        std::cell::RefCell::new(std::collections::HashSet::new());
}

/// Works around a glommio 0.9 probe that can enable the iopoll ring on devices without poll
/// queues (e.g. virtio-blk), after which every read fails with EOPNOTSUPP.
///
/// The first `DmaFile` a thread opens on a device decides, once per thread, whether that
/// device supports polled IO, by reading the first block of *that* file. On an empty file
/// the read ends at EOF without reaching the device and "succeeds", so a log whose first file
/// is a freshly created segment would be misjudged. Before the first open on a device, this
/// opens a one-block file holding data so the probe reads from the device and sees the truth.
///
/// Opens that start before the first probe finished probe too (it is cheap and only happens
/// once per device per thread), each with its own file: a shared name let one probe remove
/// the file while another was opening it.
///
/// The probe needs no new space, so a broker starts on a full disk: when the disk has no room
/// for a probe file, a file holding data in the directory or a parent on the same device is
/// opened first instead (a shard's first open may well be an empty journal segment), and only
/// when there is none does the open go on without the workaround, with a warning. (Taking the
/// file being opened as its own probe when it holds a block was tried and dropped: opens of
/// `.idx` files then failed reads with `EOPNOTSUPP` about one run in three of the async crash
/// test.)
async fn probe_iopoll_with_data(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;

    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let device = std::fs::metadata(dir)?.dev();
    if PROBED_DEVICES.with(|probed| probed.borrow().contains(&device)) {
        return Ok(());
    }
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let sequence = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = dir.join(crate::file::iopoll_probe_file_name(
        std::process::id(),
        sequence,
    ));
    if let Err(e) = std::fs::write(&probe, [0xA5u8; PROBE_BYTES]) {
        // Remove what the failed write left: it is our own file, and may hold a block.
        let _ = std::fs::remove_file(&probe);
        if e.raw_os_error() != Some(libc::ENOSPC) {
            return Err(e);
        }
        let Some(existing) = file_with_data_near(dir, device) else {
            ::log::warn!(
                "no space for the iopoll probe file in {} and no file with data near it; \
                 opening without it",
                dir.display()
            );
            return Ok(());
        };
        match DmaFile::open(&existing).await {
            Ok(file) => file.close().await?,
            Err(e) => {
                ::log::warn!(
                    "no space for the iopoll probe file in {}, and {} does not open ({e}); \
                     opening without it",
                    dir.display(),
                    existing.display()
                );
                return Ok(());
            }
        }
        PROBED_DEVICES.with(|probed| probed.borrow_mut().insert(device));
        return Ok(());
    }
    let opened = DmaFile::open(&probe).await;
    let removed = std::fs::remove_file(&probe);
    opened?.close().await?;
    removed?;
    PROBED_DEVICES.with(|probed| probed.borrow_mut().insert(device));
    Ok(())
}

/// Whether a file holds at least one block of written data (not a hole) for the probe to read.
fn holds_a_block(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;

    let block = PROBE_BYTES as u64;
    meta.is_file() && meta.len() >= block && meta.blocks() * 512 >= block
}

/// Directories searched for a file to probe with, `dir` and its parents: from a queue's
/// directory up to the data directory (`queues/<topic>/<id>`) and the one holding it.
const PROBE_SEARCH_DEPTH: usize = 5;

/// A file holding data in `dir` or its nearest parents on `device`, probe files excepted
/// (another open may be removing one).
fn file_with_data_near(dir: &Path, device: u64) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;

    dir.ancestors()
        .take(PROBE_SEARCH_DEPTH)
        .take_while(|d| std::fs::metadata(d).is_ok_and(|m| m.dev() == device))
        .find_map(|d| {
            std::fs::read_dir(d).ok()?.flatten().find_map(|entry| {
                let probe = entry
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(crate::file::IOPOLL_PROBE_PREFIX));
                let meta = entry.metadata().ok()?;
                (!probe && holds_a_block(&meta)).then(|| entry.path())
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_with_data_near_a_directory_is_found_for_the_probe() {
        use std::os::unix::fs::MetadataExt;

        // Deep enough that the search stays inside the temporary directory.
        let root = tempfile::tempdir().unwrap();
        let data_dir = root.path().join("data");
        let queue = data_dir.join("queues").join("A10-1").join("0");
        std::fs::create_dir_all(&queue).unwrap();
        std::fs::write(queue.join("LOCK"), b"").unwrap();
        // A sparse file has no block to read: it is no probe.
        std::fs::File::create(root.path().join("sparse"))
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let device = std::fs::metadata(&queue).unwrap().dev();
        assert_eq!(file_with_data_near(&queue, device), None);
        let data = data_dir.join("reserve");
        std::fs::write(&data, vec![0u8; PROBE_BYTES]).unwrap();
        assert_eq!(file_with_data_near(&queue, device), Some(data));
    }

    /// Two logs opening files in one directory at once on a fresh thread both run the iopoll
    /// probe; with a shared probe file one removed it under the other.
    #[test]
    fn concurrent_first_opens_on_one_thread_do_not_share_a_probe_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        for name in ["a", "b", "c", "d"] {
            std::fs::write(path.join(name), [1u8; 4096]).unwrap();
        }
        // A new thread: its executor has not probed any device yet.
        let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move {
                let storage = DmaStorage;
                let opens: Vec<_> = ["a", "b", "c", "d"]
                    .into_iter()
                    .map(|name| {
                        let path = path.join(name);
                        glommio::spawn_local(async move { storage.open(&path).await })
                    })
                    .collect();
                for open in opens {
                    let file = open.await.expect("opening while another open probes");
                    file.close().await.unwrap();
                }
                let leftovers: Vec<_> = std::fs::read_dir(&path)
                    .unwrap()
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.starts_with(crate::file::IOPOLL_PROBE_PREFIX))
                    .collect();
                assert!(leftovers.is_empty(), "probe files left: {leftovers:?}");
            })
            .unwrap();
        handle.join().unwrap();
    }
}
