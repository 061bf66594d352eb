//! A consumer's supervisor thread: resubscribes after reconnects, follows route changes and
//! auto-commits; woken early when a subscribed connection closes or a topic changes.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{CommitMode, ConsumerInner};
use crate::error::{ClientError, Result};

impl ConsumerInner {
    pub(super) fn spawn_supervisor(inner: &Arc<Self>) -> Result<JoinHandle<()>> {
        let weak = Arc::downgrade(inner);
        std::thread::Builder::new()
            .name(format!("defibus-subscribe-{}", inner.options.topic))
            .spawn(move || supervise(&weak))
            .map_err(|source| ClientError::Io {
                endpoint: "(local)".into(),
                source,
            })
    }

    pub(super) fn wake_supervisor(&self) {
        *self.wake.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.wake.1.notify_all();
    }
}

/// The supervisor: resubscribes after reconnects, follows route changes, auto-commits.
fn supervise(consumer: &Weak<ConsumerInner>) {
    let tick = Duration::from_millis(100);
    let mut last_commit = Instant::now();
    loop {
        let Some(inner) = consumer.upgrade() else {
            return;
        };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = inner.ensure_sessions(false) {
            log::debug!("{}: {e}", inner.options.topic);
        }
        if inner.options.commit == CommitMode::Auto
            && last_commit.elapsed() >= inner.client.config.auto_commit_interval
        {
            last_commit = Instant::now();
            if let Err(e) = inner.commit(false) {
                // Counted and logged at ERROR where the failure was recorded.
                log::debug!("auto commit: {e}");
            }
        }
        let (lock, changed) = &inner.wake;
        let woken = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let mut woken = if *woken {
            woken
        } else {
            changed
                .wait_timeout(woken, tick)
                .unwrap_or_else(PoisonError::into_inner)
                .0
        };
        *woken = false;
    }
}
