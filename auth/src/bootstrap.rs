//! A first policy and its tokens, for `defibus security init`: one token per principal, and
//! grants that let each of the bus's own processes do its job and nothing more.
//!
//! | principal | grants |
//! |---|---|
//! | `admin` | everything (`*` on `*`) |
//! | `broker` | `broker` on every broker id (register, heartbeat, replicate) |
//! | `nameserver` | `broker` on every broker id (its controller sends brokers their queue roles) |
//! | `sgs` | `admin_topic` and `admin_service` on every topic |
//! | `gsl` | none beyond reading the policy (every authenticated principal may) |
//! | `proxy` | `produce`, `consume`, `request`, `respond` on every topic: it acts for its callers and checks their own grants first |
//! | any other name | `produce`, `consume`, `request`, `respond` on every topic (an application; narrow it with `acl revoke` / `acl grant`) |

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::pattern::Pattern;
use crate::policy::{Action, Actions, Grant, Policy};

/// Default principals `security init` makes tokens for.
pub const PRINCIPALS_DEFAULT: [&str; 7] = [
    "admin",
    "broker",
    "nameserver",
    "sgs",
    "gsl",
    "proxy",
    "app",
];

/// What `init` wrote.
#[derive(Debug)]
pub struct Written {
    /// The policy document.
    pub policy_file: PathBuf,
    /// Each principal's token file.
    pub token_files: Vec<(String, PathBuf)>,
}

/// Why `init` failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A file exists and `force` was not given.
    #[error("{0} exists: pass --force to replace it (every token in it stops working)")]
    Exists(PathBuf),
    /// Writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A principal's name is not valid.
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
}

/// The grants of a principal in the first policy (see the module table).
pub fn grants_for(principal: &str) -> Vec<Grant> {
    let grant = |action: Actions, resource: &str| Grant {
        principal: Pattern::new(principal).expect("principal names are valid patterns"),
        action,
        resource: Pattern::new(resource).expect("a literal pattern"),
        group: Pattern::any(),
    };
    let data = [
        Action::Produce,
        Action::Consume,
        Action::Request,
        Action::Respond,
    ];
    match principal {
        "admin" => vec![grant(Actions::All, "*")],
        "broker" | "nameserver" => vec![grant(Actions::One(Action::Broker), "*")],
        "sgs" => vec![
            grant(Actions::One(Action::AdminTopic), "*"),
            grant(Actions::One(Action::AdminService), "*"),
        ],
        "gsl" => Vec::new(),
        _ => data
            .into_iter()
            .map(|a| grant(Actions::One(a), "*"))
            .collect(),
    }
}

/// Writes `policy.json` and `<principal>.token` (mode 0600) for each principal into `out`,
/// tokens valid for `ttl_ms`.
pub fn init(
    out: &Path,
    principals: &[String],
    ttl_ms: u64,
    force: bool,
) -> Result<Written, InitError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| InitError::Io { path, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let policy_file = out.join("policy.json");
    let token_path = |p: &str| out.join(format!("{p}.token"));
    if !force {
        let existing = std::iter::once(policy_file.clone())
            .chain(principals.iter().map(|p| token_path(p)))
            .find(|p| p.exists());
        if let Some(path) = existing {
            return Err(InitError::Exists(path));
        }
    }
    let now = crate::now_ms();
    let mut policy = Policy {
        version: 1,
        ..Policy::default()
    };
    let mut tokens = Vec::new();
    for principal in principals {
        let token = policy.issue_token(principal, now, ttl_ms)?;
        for grant in grants_for(principal) {
            policy.grant(grant);
        }
        tokens.push((principal.clone(), token));
    }
    write_private(&policy_file, policy.to_json().as_bytes()).map_err(io(&policy_file))?;
    let mut token_files = Vec::new();
    for (principal, token) in tokens {
        let path = token_path(&principal);
        write_private(&path, format!("{}\n", token.reveal()).as_bytes()).map_err(io(&path))?;
        token_files.push((principal, path));
    }
    Ok(Written {
        policy_file,
        token_files,
    })
}

/// Writes `bytes` to a new file only its owner may read.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_a_policy_whose_tokens_authenticate() {
        let dir = tempfile::tempdir().unwrap();
        let principals: Vec<String> = PRINCIPALS_DEFAULT.iter().map(|s| s.to_string()).collect();
        let written = init(dir.path(), &principals, 60_000, false).unwrap();
        let policy = crate::settings::load_policy(&written.policy_file).unwrap();
        for (principal, path) in &written.token_files {
            let token: crate::Token = std::fs::read_to_string(path).unwrap().parse().unwrap();
            assert_eq!(
                &policy.authenticate(&token, crate::now_ms()).unwrap().0,
                principal
            );
        }
        assert!(
            policy
                .allowing("admin", Action::AdminAcl, "*", "")
                .is_some()
        );
        assert!(
            policy
                .allowing("app", Action::AdminTopic, "A10-1", "")
                .is_none()
        );
        assert!(
            policy
                .allowing("sgs", Action::AdminTopic, "A10-1", "")
                .is_some()
        );
        assert!(matches!(
            init(dir.path(), &principals, 60_000, false),
            Err(InitError::Exists(_))
        ));
    }
}
