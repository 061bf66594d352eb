//! The audit log: every admin action and every denial, with principal, time and outcome, as
//! one JSON object per line, for a compliance reviewer (and `jq`).
//!
//! Records are written by a thread of their own, so a server thread (a broker shard above all)
//! never waits on the file: it hands the line to a bounded channel. If the writer falls that
//! far behind, records are counted as dropped and the count is itself recorded as soon as the
//! writer catches up, so a gap is never silent. Each line is flushed and the file synced
//! (data only) after every burst, so what a crash can lose is the last burst at most. Without a
//! file the records go to the process log, target `defibus::audit`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use serde::Serialize;

/// Records the writer may fall behind by before records are dropped (and counted).
const BACKLOG_RECORDS_MAX: usize = 64 << 10;

/// How an audited attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Allowed and done.
    Ok,
    /// Refused by the policy (or authentication failed).
    Denied,
    /// Allowed, but it failed (the detail says why).
    Failed,
}

/// One audited event.
#[derive(Clone, Debug, Serialize)]
pub struct AuditRecord {
    /// When, RFC 3339 with milliseconds, UTC.
    pub time: String,
    /// Which process recorded it (`broker broker-a`, `nameserver`, `sgs`, `proxy`).
    pub process: String,
    /// Who (`-` when the connection was not authenticated).
    pub principal: String,
    /// The peer's address.
    pub peer: String,
    /// What was attempted (`authenticate`, `delete_topic`, `acl_grant`, `produce`, …).
    pub action: String,
    /// On what.
    pub resource: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Why, for denials and failures; empty otherwise.
    pub detail: String,
}

/// The audit log of one process; cheap to clone.
#[derive(Clone)]
pub struct Audit {
    process: Arc<str>,
    sink: Option<SyncSender<String>>,
    dropped: Arc<AtomicU64>,
    path: Option<Arc<Path>>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("process", &self.process)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Audit {
    /// An audit log for `process`, appending to `path` (created if missing), or to the
    /// process log when `path` is `None`.
    pub fn open(process: &str, path: Option<&Path>) -> io::Result<Self> {
        let dropped = Arc::new(AtomicU64::new(0));
        let (sink, path) = match path {
            None => (None, None),
            Some(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                let file = OpenOptions::new().create(true).append(true).open(path)?;
                let (tx, rx) = sync_channel(BACKLOG_RECORDS_MAX);
                let writer = Writer {
                    file,
                    path: path.to_owned(),
                    dropped: dropped.clone(),
                };
                std::thread::Builder::new()
                    .name("defibus-audit".into())
                    .spawn(move || writer.run(&rx))?;
                (Some(tx), Some(Arc::from(path)))
            }
        };
        Ok(Self {
            process: Arc::from(process),
            sink,
            dropped,
            path,
        })
    }

    /// An audit log that writes to the process log only.
    pub fn to_log(process: &str) -> Self {
        Self {
            process: Arc::from(process),
            sink: None,
            dropped: Arc::new(AtomicU64::new(0)),
            path: None,
        }
    }

    /// The file records go to, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Records one event, now.
    pub fn record(
        &self,
        principal: Option<&str>,
        peer: &str,
        action: &str,
        resource: &str,
        outcome: Outcome,
        detail: &str,
    ) {
        let record = AuditRecord {
            time: rfc3339(crate::now_ms()),
            process: self.process.to_string(),
            principal: principal.unwrap_or("-").to_owned(),
            peer: peer.to_owned(),
            action: action.to_owned(),
            resource: resource.to_owned(),
            outcome,
            detail: detail.to_owned(),
        };
        let line = serde_json::to_string(&record).expect("an audit record always serialises");
        match &self.sink {
            None => match outcome {
                Outcome::Ok => log::info!(target: "defibus::audit", "{line}"),
                Outcome::Denied | Outcome::Failed => {
                    log::warn!(target: "defibus::audit", "{line}");
                }
            },
            Some(sink) => match sink.try_send(line) {
                Ok(()) => {}
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            },
        }
    }
}

/// The thread that owns the file.
struct Writer {
    file: File,
    path: PathBuf,
    dropped: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self, rx: &Receiver<String>) {
        while let Ok(first) = rx.recv() {
            let mut burst = vec![first];
            burst.extend(rx.try_iter());
            let dropped = self.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                burst.push(
                    serde_json::json!({
                        "time": rfc3339(crate::now_ms()),
                        "action": "audit_records_dropped",
                        "outcome": "failed",
                        "detail": format!(
                            "{dropped} records dropped: the audit writer fell \
                             {BACKLOG_RECORDS_MAX} records behind"
                        ),
                    })
                    .to_string(),
                );
            }
            let mut bytes = burst.join("\n");
            bytes.push('\n');
            let written = self
                .file
                .write_all(bytes.as_bytes())
                .and_then(|()| self.file.sync_data());
            if let Err(e) = written {
                // The log is all that is left to say it with; the records are lost.
                log::error!(
                    "audit log {}: cannot write {} records: {e}",
                    self.path.display(),
                    burst.len()
                );
            }
        }
    }
}

/// `ms` since the Unix epoch as RFC 3339 with milliseconds, UTC.
pub fn rfc3339(ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_json_lines_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit/audit.log");
        let audit = Audit::open("broker b1", Some(&path)).unwrap();
        audit.record(
            Some("alice"),
            "127.0.0.1:5",
            "delete_topic",
            "A10-1",
            Outcome::Denied,
            "no grant",
        );
        audit.record(
            None,
            "127.0.0.1:6",
            "authenticate",
            "-",
            Outcome::Denied,
            "token x unknown",
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let lines = loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.lines().count() == 2 {
                break text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "audit lines: {text:?}"
            );
            std::thread::yield_now();
        };
        let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
        assert_eq!(first["principal"], "alice");
        assert_eq!(first["outcome"], "denied");
        assert_eq!(first["action"], "delete_topic");
        assert_eq!(first["process"], "broker b1");
        assert!(first["time"].as_str().unwrap().ends_with('Z'));
    }
}
