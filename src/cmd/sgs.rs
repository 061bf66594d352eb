//! `defibus sgs`: run the SGS, or (`defibus sgs service ...`) ask one to apply, deploy, take
//! offline, list or show services.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use protocol::control::{
    FlushMode, MAX_QUEUE_DEPTH_DEFAULT, QUEUE_COUNT_DEFAULT, ServiceRecord, ServiceState,
};
use sgs::client::SgsClient;

use crate::cmd::shared::table;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SgsCliArgs {
    #[command(flatten)]
    server: sgs::cli::SgsArgs,
    #[command(subcommand)]
    command: Option<SgsCommand>,
}

#[derive(Subcommand)]
enum SgsCommand {
    /// Apply for, deploy, take offline, list or show services on a running SGS.
    #[command(subcommand)]
    Service(ServiceCommand),
}

#[derive(Subcommand)]
enum ServiceCommand {
    /// Register a service (or change one not deployed); prints the stored record.
    Apply(ApplyArgs),
    /// Create the service's topic in each of its areas and have GSL resolve it.
    Deploy(IdArgs),
    /// Take the service out of GSL, wait for its queues to drain, delete its topics.
    Offline(IdArgs),
    /// Print every service.
    List(SgsAddr),
    /// Print one service.
    Show(IdArgs),
}

#[derive(Args)]
struct SgsAddr {
    /// The SGS, host:port.
    #[arg(long = "sgs", default_value = "127.0.0.1:9878", env = "DEFIBUS_SGS")]
    endpoint: String,
    /// A file holding the token to authenticate with, where the SGS requires it.
    #[arg(long, value_name = "FILE", env = "DEFIBUS_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    /// How long to wait for the answer (deploy and offline wait for brokers and draining),
    /// in ms.
    #[arg(long, default_value_t = 120_000)]
    timeout_ms: u64,
    #[command(flatten)]
    tls: super::shared::TlsArgs,
}

#[derive(Args)]
struct IdArgs {
    /// The service id, e.g. 20190001.
    #[arg(long = "id")]
    service_id: String,
    #[command(flatten)]
    sgs: SgsAddr,
}

#[derive(Args)]
struct ApplyArgs {
    /// The service id, e.g. 20190001.
    #[arg(long = "id")]
    service_id: String,
    /// Human-readable name.
    #[arg(long, default_value = "")]
    name: String,
    /// Owning team or person.
    #[arg(long, default_value = "")]
    owner: String,
    /// Areas to deploy to, comma-separated (each configured in the SGS's [areas.X]).
    #[arg(long, value_delimiter = ',', required = true)]
    areas: Vec<String>,
    /// Queues of each area's topic.
    #[arg(long, default_value_t = QUEUE_COUNT_DEFAULT)]
    queues: u32,
    /// Unconsumed messages per queue before produces are refused.
    #[arg(long, default_value_t = MAX_QUEUE_DEPTH_DEFAULT)]
    max_queue_depth: u64,
    /// How appends are made durable.
    #[arg(long, value_enum, default_value_t = Flush::Async)]
    flush: Flush,
    #[command(flatten)]
    sgs: SgsAddr,
}

#[derive(Clone, Copy, ValueEnum)]
enum Flush {
    /// Acknowledge once written to the shard's buffer.
    Async,
    /// Acknowledge after fdatasync.
    Sync,
}

impl SgsCliArgs {
    /// True when this runs the server rather than a `service` command.
    pub fn is_server(&self) -> bool {
        self.command.is_none()
    }
}

pub fn run(args: SgsCliArgs) -> anyhow::Result<()> {
    let Some(SgsCommand::Service(command)) = args.command else {
        return sgs::cli::cli_main(&args.server).map_err(anyhow::Error::from);
    };
    match command {
        ServiceCommand::Apply(apply) => {
            let record = ServiceRecord {
                service_id: apply.service_id,
                name: apply.name,
                owner: apply.owner,
                deployed_areas: apply.areas,
                queue_count: apply.queues,
                max_queue_depth: apply.max_queue_depth,
                flush_mode: match apply.flush {
                    Flush::Async => FlushMode::Async,
                    Flush::Sync => FlushMode::Sync,
                },
                state: ServiceState::Applied,
            };
            let id = record.service_id.clone();
            let stored = connect(&apply.sgs)?
                .apply(&record)
                .with_context(|| format!("applying service {id}"))?;
            print!("{}", records_table(&[stored]));
        }
        ServiceCommand::Deploy(id) => {
            let record = connect(&id.sgs)?
                .deploy(&id.service_id)
                .with_context(|| format!("deploying service {}", id.service_id))?;
            print!("{}", records_table(&[record]));
        }
        ServiceCommand::Offline(id) => {
            let record = connect(&id.sgs)?
                .offline(&id.service_id)
                .with_context(|| format!("taking service {} offline", id.service_id))?;
            print!("{}", records_table(&[record]));
        }
        ServiceCommand::List(sgs) => print!("{}", records_table(&connect(&sgs)?.list()?)),
        ServiceCommand::Show(id) => {
            print!(
                "{}",
                records_table(&[connect(&id.sgs)?.show(&id.service_id)?])
            );
        }
    }
    Ok(())
}

fn connect(sgs: &SgsAddr) -> anyhow::Result<SgsClient> {
    let token = match &sgs.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the token file {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let tls = match sgs.tls.settings() {
        Some(settings) => {
            Some(sgs::rpc::TlsClient::new(&settings).context("the TLS settings (--tls-ca ...)")?)
        }
        None => None,
    };
    let mut client = SgsClient::connect_with(&sgs.endpoint, token.as_deref(), tls.as_ref())?;
    client.request_timeout = Duration::from_millis(sgs.timeout_ms);
    client.operation_timeout = Duration::from_millis(sgs.timeout_ms);
    Ok(client)
}

fn records_table(records: &[ServiceRecord]) -> String {
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.service_id.clone(),
                format!("{:?}", r.state).to_lowercase(),
                r.deployed_areas.join(","),
                r.queue_count.to_string(),
                r.max_queue_depth.to_string(),
                format!("{:?}", r.flush_mode).to_lowercase(),
                r.name.clone(),
                r.owner.clone(),
            ]
        })
        .collect();
    table(
        &[
            "SERVICE", "STATE", "AREAS", "QUEUES", "DEPTH", "FLUSH", "NAME", "OWNER",
        ],
        &rows,
    )
}
