//! Small filesystems that scenarios can fill: a loop-mounted ext4 image or a tmpfs, mounted
//! on a temporary directory and unmounted (and detached) when dropped.
//!
//! Mounting needs root. Where it is not available, [`SmallDisk::ext4`] and
//! [`SmallDisk::tmpfs`] print why and return `None`, and the scenario says it was skipped;
//! they never pass silently.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted filesystem of a few MiB.
pub struct SmallDisk {
    /// The mount point.
    mount: PathBuf,
    /// The temporary directory that is the mount point, when this made it: removed once
    /// `drop` unmounted it (fields drop after `Drop::drop` ran).
    _mount_dir: Option<tempfile::TempDir>,
    /// The loop device and the directory of its image file, for an ext4 disk.
    backing: Option<(String, tempfile::TempDir)>,
}

/// Runs `program` with `args`; the error says which command failed and what it printed.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn is_root() -> bool {
    run("id", &["-u"]).is_ok_and(|uid| uid == "0")
}

/// Prints that `test` is skipped and why, and returns `None`.
fn skip(test: &str, why: &str) -> Option<SmallDisk> {
    println!("SKIPPED {test}: {why}");
    eprintln!("SKIPPED {test}: {why}");
    None
}

impl SmallDisk {
    /// An ext4 filesystem of `size_mib` MiB on a loop device, with 4 KiB blocks and no blocks
    /// reserved for root (the tests run as root, and a reserve would hide the full disk).
    /// `None`, printed as a skip of `test`, when not root or loop devices are unavailable.
    pub fn ext4(test: &str, size_mib: u64) -> Option<Self> {
        if !is_root() {
            return skip(test, "mounting a loop device needs root");
        }
        let image_dir = tempfile::tempdir().expect("a temporary directory");
        let image = image_dir.path().join("disk.img");
        let image_str = image.to_str().expect("a UTF-8 temporary path");
        let made = std::fs::File::create(&image)
            .and_then(|f| f.set_len(size_mib << 20))
            .map_err(|e| format!("creating {image_str}: {e}"))
            .and_then(|()| {
                run(
                    "mkfs.ext4",
                    &["-q", "-F", "-m", "0", "-b", "4096", image_str],
                )
            });
        if let Err(e) = made {
            return skip(test, &format!("no ext4 image: {e}"));
        }
        let device = match run("losetup", &["--find", "--show", image_str]) {
            Ok(device) => device,
            Err(e) => return skip(test, &format!("loop devices are unavailable: {e}")),
        };
        let mount_dir = tempfile::tempdir().expect("a temporary directory");
        let disk = Self {
            mount: mount_dir.path().to_path_buf(),
            _mount_dir: Some(mount_dir),
            backing: Some((device.clone(), image_dir)),
        };
        let target = disk.mount.to_str().expect("a UTF-8 temporary path");
        if let Err(e) = run("mount", &[&device, target]) {
            return skip(test, &format!("mounting {device}: {e}"));
        }
        Some(disk)
    }

    /// A tmpfs of `size_mib` MiB. `None`, printed as a skip of `test`, when not root.
    pub fn tmpfs(test: &str, size_mib: u64) -> Option<Self> {
        let mount_dir = tempfile::tempdir().expect("a temporary directory");
        let mut disk = Self::tmpfs_at(test, mount_dir.path(), size_mib << 10)?;
        disk._mount_dir = Some(mount_dir);
        Some(disk)
    }

    /// A tmpfs of `size_kib` KiB mounted on `dir`, which must exist. `None`, printed as a
    /// skip of `test`, when not root.
    pub fn tmpfs_at(test: &str, dir: &Path, size_kib: u64) -> Option<Self> {
        if !is_root() {
            return skip(test, "mounting a tmpfs needs root");
        }
        let target = dir.to_str().expect("a UTF-8 path");
        let size = format!("size={size_kib}k");
        if let Err(e) = run("mount", &["-t", "tmpfs", "-o", &size, "tmpfs", target]) {
            return skip(test, &format!("mounting a tmpfs: {e}"));
        }
        Some(Self {
            mount: dir.to_path_buf(),
            _mount_dir: None,
            backing: None,
        })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// Fills the disk to its last block with a filler file, and returns the file's path.
    pub fn fill(&self, name: &str) -> PathBuf {
        let path = self.path().join(name);
        let mut file = std::fs::File::create(&path).expect("the filler file is created");
        // Large writes first, then single blocks until not even one fits. Writeback can give
        // back blocks the filesystem held for buffered writes (ext4 reserves for the worst
        // case), so fill again after each sync until a round finds no room at all.
        loop {
            let mut written = 0u64;
            for chunk in [1 << 20, 4096] {
                let buf = vec![0x5Au8; chunk];
                loop {
                    match file.write(&buf) {
                        Ok(0) => break,
                        Ok(n) => written += n as u64,
                        Err(e) if is_no_space(&e) => break,
                        Err(e) => panic!("filling {}: {e}", path.display()),
                    }
                }
            }
            match file.sync_all() {
                Ok(()) => {}
                Err(e) if is_no_space(&e) => {}
                Err(e) => panic!("syncing {}: {e}", path.display()),
            }
            if written == 0 {
                return path;
            }
        }
    }

    /// Used space, percent, as `df` reports it (rounded up).
    pub fn used_percent(&self) -> u8 {
        let target = self.path().to_str().expect("a UTF-8 temporary path");
        let out = run("df", &["--output=pcent", target]).expect("df runs");
        out.lines()
            .last()
            .and_then(|l| l.trim().trim_end_matches('%').parse().ok())
            .expect("df prints a percentage")
    }
}

fn is_no_space(e: &io::Error) -> bool {
    e.raw_os_error() == Some(28) // ENOSPC
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let target = self.path().to_str().unwrap_or_default().to_owned();
        // A lazy unmount still detaches a mount a leftover thread holds a file open on.
        if let Err(e) = run("umount", &[&target]).or_else(|_| run("umount", &["-l", &target])) {
            eprintln!("unmounting {target}: {e}");
        }
        if let Some((device, _image_dir)) = &self.backing {
            if let Err(e) = run("losetup", &["-d", device]) {
                eprintln!("detaching {device}: {e}");
            }
        }
    }
}
