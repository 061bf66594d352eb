//! Process limits the large workloads need: the scale sweep holds thousands of sockets
//! (clients and the embedded broker's ends) and queue files in this one process.

/// Raises the soft open-file limit to the hard one (any process may), and the hard one too
/// when `wanted` is above it and the process is allowed to (CAP_SYS_RESOURCE). Returns the
/// soft limit now in force, `None` where it cannot be read.
pub fn raise_open_files(wanted: u64) -> Option<u64> {
    let mut limit = open_files_rlimit()?;
    if limit.rlim_cur >= wanted {
        return Some(limit.rlim_cur);
    }
    // First both limits to `wanted` (needs CAP_SYS_RESOURCE when above the hard limit), then
    // the soft limit to the hard one, which any process may do.
    let attempts = [
        (wanted, wanted.max(limit.rlim_max)),
        (wanted.min(limit.rlim_max), limit.rlim_max),
    ];
    for (soft, hard) in attempts {
        if soft <= limit.rlim_cur {
            continue;
        }
        let raised = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        #[allow(unsafe_code)]
        // SAFETY: setrlimit only reads the struct we pass.
        let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0;
        if set {
            log::info!(
                "open files: soft limit raised from {} to {soft} (hard {hard})",
                limit.rlim_cur
            );
            if soft >= wanted {
                return Some(soft);
            }
            limit.rlim_cur = soft;
        }
    }
    log::info!(
        "open files: limit {} (hard {}), below the {wanted} asked for; raising the hard limit \
         needs CAP_SYS_RESOURCE",
        limit.rlim_cur,
        limit.rlim_max
    );
    Some(limit.rlim_cur)
}

/// The soft open-file limit in force.
pub fn open_files_limit() -> Option<u64> {
    open_files_rlimit().map(|limit| limit.rlim_cur)
}

fn open_files_rlimit() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    got.then_some(limit)
}

/// Files this process has open now (sockets and the embedded broker's queue files
/// included).
pub fn open_files() -> Option<u64> {
    std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|entries| entries.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_files_are_counted_below_the_limit() {
        let open = open_files().expect("Linux has /proc/self/fd");
        let file = tempfile::tempfile().unwrap();
        assert!(open_files().unwrap() > open);
        drop(file);
        assert!(open < open_files_limit().unwrap());
    }

    #[test]
    fn the_limit_never_goes_down() {
        let before = raise_open_files(0).expect("readable on Linux");
        assert!(raise_open_files(64).unwrap() >= before.min(64));
        assert_eq!(raise_open_files(0), Some(raise_open_files(0).unwrap()));
    }
}
