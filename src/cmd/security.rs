//! `defibus security init`: a first policy and one token per principal, so a newcomer can
//! run a secured bus in two commands (docs/ARCHITECTURE.md §9).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum SecurityCommand {
    /// Write DIR/policy.json and DIR/<principal>.token (mode 0600) for each principal.
    ///
    /// Grants: admin may do everything; broker and nameserver may act as brokers; sgs may
    /// administer topics and services; gsl only reads the policy; proxy and every other
    /// principal may produce, consume, request and respond on every topic. Narrow them with
    /// `defibus admin acl`. Example:
    ///
    ///   defibus security init --out ./secrets
    ///   defibus nameserver --secure --policy-file ./secrets/policy.json
    Init {
        /// Directory to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A principal to make a token for; repeat for several
        /// [default: admin, broker, nameserver, sgs, gsl, proxy, app].
        #[arg(long = "principal", value_name = "NAME")]
        principals: Vec<String>,
        /// How long the tokens are accepted: e.g. 30d, 1y.
        #[arg(long, default_value = "365d", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Replace existing files (every token in them stops working).
        #[arg(long)]
        force: bool,
    },
}

/// Runs `security …`.
pub fn run(command: SecurityCommand) -> anyhow::Result<ExitCode> {
    let SecurityCommand::Init {
        out,
        principals,
        ttl,
        force,
    } = command;
    let principals = if principals.is_empty() {
        auth::bootstrap::PRINCIPALS_DEFAULT
            .iter()
            .map(|p| (*p).to_owned())
            .collect()
    } else {
        principals
    };
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let written = auth::bootstrap::init(&out, &principals, ttl_ms, force)
        .with_context(|| format!("writing the security files into {}", out.display()))?;
    println!("policy: {}", written.policy_file.display());
    for (principal, path) in &written.token_files {
        println!("token of {principal}: {}", path.display());
    }
    println!(
        "\nnameserver.toml:  [security] enabled = true, policy_file = \"{}\", \
         token_file = \"{}\"",
        written.policy_file.display(),
        out.join("nameserver.token").display()
    );
    println!(
        "broker.toml:      [security] enabled = true, token_file = \"{}\"",
        out.join("broker.token").display()
    );
    println!(
        "clients:          --token-file {} (or DEFIBUS_TOKEN_FILE)",
        out.join("admin.token").display()
    );
    Ok(ExitCode::SUCCESS)
}
