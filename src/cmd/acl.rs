//! `defibus admin acl …` and `defibus admin token …`: read the policy from the nameservers,
//! change it, and store it on every one of them (docs/ARCHITECTURE.md §9).
//!
//! A change reads every nameserver's policy, applies itself to the newest, and stores the
//! result on each with the version it was based on: a nameserver that missed an earlier
//! change (it was down) catches up, and a concurrent change by someone else is refused
//! rather than undone. The command fails (exit 1) unless every nameserver stored it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use auth::{Grant, Policy};
use clap::{Args, Subcommand};
use client::Admin;

use super::shared::table;

/// Default lifetime of a token made with `admin token create`.
const TOKEN_TTL_DEFAULT: &str = "90d";

#[derive(Subcommand, Debug)]
pub enum AclCommand {
    /// Print every grant, and the nameservers' policy versions.
    List,
    /// Let a principal do an action on resources matching a pattern.
    ///
    /// Example: defibus admin acl grant alice produce 'A10-*'
    Grant(GrantArgs),
    /// Remove a grant (the same principal, action, resource and group as granted).
    Revoke(GrantArgs),
}

#[derive(Args, Debug)]
pub struct GrantArgs {
    /// The principal: a token's owner or a certificate's subject; `*` for every
    /// authenticated principal.
    principal: String,
    /// produce, consume, request, respond, admin_topic, admin_service, admin_acl, broker, or
    /// `*` for every action.
    action: String,
    /// The topic (or broker id, for `broker`) pattern: `A10-*`, `*-20190001`, `*`.
    resource: String,
    /// For consume: the consumer groups the grant covers (a pattern).
    #[arg(long, default_value = "*")]
    group: String,
}

impl GrantArgs {
    fn grant(&self) -> anyhow::Result<Grant> {
        Ok(Grant::parse(
            &self.principal,
            &self.action,
            &self.resource,
            &self.group,
        )?)
    }
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Issue a token for a principal; prints it (or writes it to --out, mode 0600). The
    /// token is shown once: the nameservers keep only a hash of it.
    Create {
        /// Whose token it is.
        principal: String,
        /// How long it is accepted: e.g. 12h, 30d, 1y.
        #[arg(long, default_value = TOKEN_TTL_DEFAULT, value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Write the token to this file (mode 0600) instead of printing it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Revoke a token by its id (the second part of dfb.<id>.<secret>, or from `token list`).
    Revoke {
        /// The token's id.
        id: String,
    },
    /// Print every token's id, principal, creation and expiry (never the secret).
    List,
}

/// `admin acl …`.
pub fn acl(admin: &Admin, command: AclCommand) -> anyhow::Result<ExitCode> {
    match command {
        AclCommand::List => {
            let (version, policy) = newest(admin)?;
            let rows: Vec<Vec<String>> = policy
                .grants
                .iter()
                .map(|g| {
                    vec![
                        g.principal.to_string(),
                        g.action.to_string(),
                        g.resource.to_string(),
                        g.group.to_string(),
                    ]
                })
                .collect();
            println!("policy version {version}: {} grants", rows.len());
            print!(
                "{}",
                table(&["PRINCIPAL", "ACTION", "RESOURCE", "GROUP"], &rows)
            );
            Ok(ExitCode::SUCCESS)
        }
        AclCommand::Grant(args) => {
            let grant = args.grant()?;
            change(admin, |policy| {
                Ok(if policy.grant(grant.clone()) {
                    Edit::Changed(format!("granted: {grant}"))
                } else {
                    Edit::Unchanged(format!("already granted: {grant}"))
                })
            })
        }
        AclCommand::Revoke(args) => {
            let grant = args.grant()?;
            change(admin, |policy| {
                if policy.revoke(&grant) == 0 {
                    bail!("no such grant: {grant} (see `defibus admin acl list`)");
                }
                Ok(Edit::Changed(format!("revoked: {grant}")))
            })
        }
    }
}

/// `admin token …`.
pub fn token(admin: &Admin, command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::List => {
            let (version, policy) = newest(admin)?;
            let rows: Vec<Vec<String>> = policy
                .tokens
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        t.principal.clone(),
                        auth::audit::rfc3339(t.created_at_ms),
                        auth::audit::rfc3339(t.expires_at_ms),
                    ]
                })
                .collect();
            println!("policy version {version}: {} tokens", rows.len());
            print!(
                "{}",
                table(&["ID", "PRINCIPAL", "CREATED", "EXPIRES"], &rows)
            );
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Revoke { id } => change(admin, |policy| {
            if !policy.revoke_token(&id) {
                bail!("no token with id {id} (see `defibus admin token list`)");
            }
            Ok(Edit::Changed(format!("revoked token {id}")))
        }),
        TokenCommand::Create {
            principal,
            ttl,
            out,
        } => {
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            let mut issued = None;
            let code = change(admin, |policy| {
                let token = policy.issue_token(&principal, auth::now_ms(), ttl_ms)?;
                let summary = format!(
                    "issued token {} for {principal}, valid for {}",
                    token.id(),
                    humantime::format_duration(ttl)
                );
                issued = Some(token);
                Ok(Edit::Changed(summary))
            })?;
            let Some(token) = issued else {
                bail!("no token was issued");
            };
            match out {
                Some(path) => {
                    write_private(&path, &token.reveal())?;
                    eprintln!("token written to {}", path.display());
                }
                None => println!("{}", token.reveal()),
            }
            Ok(code)
        }
    }
}

/// The newest policy the nameservers hold, and its version; says which nameservers could
/// not be read.
fn newest(admin: &Admin) -> anyhow::Result<(u64, Policy)> {
    let mut best: Option<(u64, String)> = None;
    let mut errors = Vec::new();
    for (nameserver, answer) in admin.policies() {
        match answer {
            Ok((version, json)) => {
                if best.as_ref().is_none_or(|(v, _)| version > *v) {
                    best = Some((version, json));
                }
            }
            Err(e) => errors.push(format!("{nameserver}: {e}")),
        }
    }
    for error in &errors {
        eprintln!("warning: cannot read the policy from {error}");
    }
    let Some((version, json)) = best else {
        bail!(
            "no nameserver answered with its policy: {}",
            errors.join("; ")
        );
    };
    let policy = Policy::from_json(&json).context("the nameservers' policy")?;
    Ok((version, policy))
}

/// What an edit of the policy did.
enum Edit {
    /// It changed the policy; says how.
    Changed(String),
    /// There was nothing to change; says why.
    Unchanged(String),
}

/// Applies `edit` to the newest policy and stores the result on every nameserver; prints
/// what `edit` says it did and each nameserver's outcome.
fn change(
    admin: &Admin,
    edit: impl FnOnce(&mut Policy) -> anyhow::Result<Edit>,
) -> anyhow::Result<ExitCode> {
    let (version, mut policy) = newest(admin)?;
    let summary = match edit(&mut policy)? {
        Edit::Changed(summary) => summary,
        Edit::Unchanged(summary) => {
            eprintln!("{summary}: nothing to change");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let mut failed = Vec::new();
    for (nameserver, outcome) in admin.put_policy(version, &policy.to_json()) {
        match outcome {
            Ok(stored) => eprintln!("{nameserver}: policy version {stored} stored"),
            // Not allowed to change the policy: that is the whole answer.
            Err(
                e @ (client::ClientError::Denied { .. }
                | client::ClientError::Unauthenticated { .. }),
            ) => {
                return Err(e).context("changing the policy");
            }
            Err(e) => failed.push(format!("{nameserver}: {e}")),
        }
    }
    if !failed.is_empty() {
        bail!(
            "{summary}, but not stored everywhere: {}; run the command again once every \
             nameserver is reachable",
            failed.join("; ")
        );
    }
    eprintln!("{summary}");
    wait_for_brokers(admin, version + 1);
    Ok(ExitCode::SUCCESS)
}

/// How long a change waits for every live broker to enforce it: a few of the brokers'
/// default `policy_refresh_ms` (1000).
const ENFORCED_WAIT_MAX: Duration = Duration::from_secs(5);

/// Waits until every live broker enforces policy `version` (they fetch it every
/// `policy_refresh_ms`), and says so, or says which do not yet. Never fails: the change is
/// stored, and the brokers that are behind will take it.
fn wait_for_brokers(admin: &Admin, version: u64) {
    let started = std::time::Instant::now();
    let brokers = match admin.cluster_info() {
        Ok(info) => info.brokers,
        Err(e) => {
            eprintln!("cannot list the brokers to see the change in force: {e}");
            return;
        }
    };
    let mut behind: Vec<String> = Vec::new();
    let mut pause = Duration::from_millis(20);
    loop {
        behind.clear();
        for broker in &brokers {
            let Some(port) = broker.shard_ports.first() else {
                continue;
            };
            let endpoint = format!("{}:{port}", broker.address);
            let enforced = admin
                .stats(&endpoint)
                .is_ok_and(|stats| stats.policy_version >= version);
            if !enforced {
                behind.push(broker.broker_id.clone());
            }
        }
        if behind.is_empty() {
            let n = brokers.len();
            eprintln!(
                "in force on {n} broker{} ({} ms)",
                if n == 1 { "" } else { "s" },
                started.elapsed().as_millis()
            );
            return;
        }
        if started.elapsed() >= ENFORCED_WAIT_MAX {
            eprintln!(
                "not yet in force on {} after {} ms: they apply it at their next policy fetch",
                behind.join(", "),
                started.elapsed().as_millis()
            );
            return;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Writes a secret to a new file only its owner may read.
fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{text}").with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
