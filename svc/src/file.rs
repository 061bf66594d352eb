//! The state on disk: a snapshot file replaced atomically, and the lock on its directory.
//!
//! # Snapshot format
//!
//! ```text
//! [0, 8)    magic, names the owner and the format ("DFBGSL01", "DFBSGS01")
//! [8, 12)   version u32 LE, 1
//! [12, 16)  body length u32 LE
//! [16, 20)  CRC32C of the body, u32 LE
//! [20, 24)  reserved, zero
//! [24, ..)  body: an rkyv archive (8-aligned at offset 24)
//! ```
//!
//! # Durability protocol ([`write_atomically`])
//!
//! 1. Write the whole snapshot to `<name>.tmp` (created or truncated).
//! 2. **fsync `<name>.tmp`**: its bytes are on disk before any name points at them.
//! 3. Rename `<name>.tmp` over `<name>`: readers see the old snapshot or the new, never a mix.
//! 4. **fsync the directory**: the rename survives a power loss. Only now is the change
//!    acknowledged.
//!
//! A crash before step 3 leaves the old snapshot and a stray `.tmp`, removed at the next
//! [`read_snapshot`]; a crash after it leaves the new one. The data directory itself is made
//! durable in its parent when created ([`open_dir`]), and a `LOCK` file held with
//! `flock(LOCK_EX | LOCK_NB)` keeps two servers from writing one directory.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Bytes before the body.
pub const HEADER_LEN: usize = 24;
/// The only snapshot version written and read.
pub const VERSION: u32 = 1;
/// Name of the lock file in the data directory.
pub const LOCK_FILE: &str = "LOCK";
/// Suffix of the snapshot being written.
pub const TMP_SUFFIX: &str = ".tmp";

const _: () = assert!(HEADER_LEN % 8 == 0, "the body must stay 8-aligned for rkyv");

/// Frames `body` as a snapshot with `magic`.
pub fn encode_snapshot(magic: &[u8; 8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&VERSION.to_le_bytes());
    // Bodies are bounded far below 4 GiB by the services' limits; a longer one would have
    // failed to archive (rkyv's 32-bit relative pointers) before getting here.
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(body);
    out
}

/// The body of a snapshot with `magic`, or why `bytes` are not one.
pub fn decode_snapshot<'a>(magic: &[u8; 8], bytes: &'a [u8]) -> Result<&'a [u8], String> {
    let Some(header) = bytes.get(..HEADER_LEN) else {
        return Err(format!("{} bytes, shorter than the header", bytes.len()));
    };
    let u32_at = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    if &header[..8] != magic {
        return Err(format!("magic {:?} is not {:?}", &header[..8], magic));
    }
    let version = u32_at(8);
    if version != VERSION {
        return Err(format!("version {version}, this build reads {VERSION}"));
    }
    if u32_at(20) != 0 {
        return Err("reserved bytes are not zero".into());
    }
    let body = &bytes[HEADER_LEN..];
    let body_len = u32_at(12) as usize;
    if body.len() != body_len {
        return Err(format!(
            "body of {} bytes, header says {body_len}",
            body.len()
        ));
    }
    let (stored, computed) = (u32_at(16), crc32c::crc32c(body));
    if stored != computed {
        return Err(format!(
            "body checksum {computed:#010x}, header says {stored:#010x}"
        ));
    }
    Ok(body)
}

/// The directory holding the state, created (and made durable in its parent) if missing,
/// with its lock taken. The lock is released when the returned file is dropped.
pub fn open_dir(dir: &Path) -> std::io::Result<File> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsync_directory(parent)?;
        }
    }
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))?;
    flock_exclusive(&lock)?;
    Ok(lock)
}

/// The snapshot at `path`, if there is one. A `.tmp` left by a crash mid-write is removed:
/// it was never renamed, so it was never acknowledged.
pub fn read_snapshot(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let tmp = tmp_path(path);
    match std::fs::remove_file(&tmp) {
        Ok(()) => log::warn!("removed {}, left by an interrupted write", tmp.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces the file at `path` with `bytes`, crash-safe (the module's durability protocol).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = tmp_path(path);
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    fsync_directory(dir.unwrap_or(Path::new(".")))
}

/// Makes the entries of `dir` (creations, renames, removals) durable.
pub fn fsync_directory(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TMP_SUFFIX);
    PathBuf::from(name)
}

fn flock_exclusive(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            Err(std::io::Error::new(
                e.kind(),
                "locked by another process: is a server already running on this directory?",
            ))
        } else {
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: &[u8; 8] = b"DFBTST01";

    #[test]
    fn snapshots_round_trip_and_golden_bytes_hold() {
        let bytes = encode_snapshot(MAGIC, b"abc");
        // Golden: a change here breaks every snapshot already on disk.
        let mut golden = b"DFBTST01".to_vec();
        golden.extend_from_slice(&[1, 0, 0, 0, 3, 0, 0, 0]);
        golden.extend_from_slice(&crc32c::crc32c(b"abc").to_le_bytes());
        golden.extend_from_slice(&[0, 0, 0, 0]);
        golden.extend_from_slice(b"abc");
        assert_eq!(bytes, golden);
        assert_eq!(decode_snapshot(MAGIC, &bytes).unwrap(), b"abc");
    }

    #[test]
    fn damage_is_reported_with_a_reason() {
        let good = encode_snapshot(MAGIC, b"abcdef");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good[..10].to_vec(), "shorter than the header"),
            (good[..good.len() - 1].to_vec(), "header says 6"),
            ([b"DFBXXX01".as_slice(), &good[8..]].concat(), "magic"),
            (
                {
                    let mut b = good.clone();
                    b[HEADER_LEN] ^= 1;
                    b
                },
                "checksum",
            ),
            (
                {
                    let mut b = good.clone();
                    b[8] = 2;
                    b
                },
                "version 2",
            ),
            (
                {
                    let mut b = good.clone();
                    b[21] = 1;
                    b
                },
                "reserved",
            ),
        ];
        for (bytes, expected) in cases {
            let reason = decode_snapshot(MAGIC, &bytes).unwrap_err();
            assert!(reason.contains(expected), "{reason} lacks {expected}");
        }
    }

    #[test]
    fn atomic_writes_replace_and_stray_temp_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let _lock = open_dir(&state).unwrap();
        let path = state.join("x.snap");
        assert_eq!(read_snapshot(&path).unwrap(), None);
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        std::fs::write(tmp_path(&path), b"torn").unwrap();
        assert_eq!(read_snapshot(&path).unwrap().unwrap(), b"two");
        assert!(!tmp_path(&path).exists());
        let err = open_dir(&state).unwrap_err();
        assert!(err.to_string().contains("locked"), "{err}");
    }
}
