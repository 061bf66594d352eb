//! `defibus`: the one command line that fronts every DeFiBus process and tool.
//!
//! Servers (broker, nameserver, GSL, SGS, proxy, standalone) arrive with the issues that build
//! them; each is a thin wrapper over its crate's `run(listener, config, shutdown)`.

mod cmd;

use clap::{Parser, Subcommand};

/// jemalloc, not the system allocator: it keeps freed memory for reuse, so the logs' 1 MiB
/// write chunks and the connections' receive buffers come back warm instead of as fresh pages
/// the kernel must zero (docs/ARCHITECTURE.md, "Memory").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "defibus",
    version,
    about = "DeFiBus-rs: a message bus for financial services (RPC + MQ)",
    long_about = "DeFiBus-rs: a message bus for financial services (RPC + MQ).\n\n\
        Every service is one topic named [area]-[serviceId], e.g. A10-20190001.\n\
        Logs go to stderr; set the level with --log-level or RUST_LOG.\n\n\
        Quick start: `defibus standalone` in one terminal, then in another:\n  \
        defibus admin topic create --topic A10-20190001\n  \
        defibus produce --topic A10-20190001 hello\n  \
        defibus consume --topic A10-20190001 --group G1 --count 1",
    // Every subcommand's --help ends with the exit codes: see `with_exit_codes`.
)]
struct Cli {
    /// Log level: error, warn, info, debug or trace [default: info for servers, warn for
    /// client commands]. RUST_LOG, if set, takes precedence.
    #[arg(long, global = true)]
    log_level: Option<log::LevelFilter>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole bus in one process: nameserver, broker (all cores), GSL, SGS and the proxy
    /// (HTTP and WebSocket, --no-proxy to leave it out); data in ./defibus-data.
    ///
    /// Prints where each part listens. Stops cleanly on SIGTERM or SIGINT.
    Standalone(cmd::standalone::StandaloneArgs),
    /// Run a nameserver: brokers register with it, clients ask it where a topic's queues live.
    ///
    /// A broker that stops registering is dropped after broker_expiry_ms. Run several for
    /// redundancy; each is independent. Stops cleanly on SIGTERM or SIGINT.
    Nameserver(nameserver::cli::NameserverArgs),
    /// Run a GSL (service location): resolves a service id to its deployments, nearby first.
    ///
    /// SGS pushes every service's deployments to it; the directory is kept crash-safe under
    /// --data-dir. Stops cleanly on SIGTERM or SIGINT.
    Gsl(gsl::cli::GslArgs),
    /// Run an SGS (service governance), or manage services on one with `sgs service ...`.
    ///
    /// The server keeps the durable registry of services, creates and deletes their topics on
    /// the brokers of each area ([areas.X] in --config) and keeps GSL current. Stops cleanly on
    /// SIGTERM or SIGINT.
    Sgs(cmd::sgs::SgsCliArgs),
    /// Run the proxy: HTTP/1.1 JSON and WebSocket access to the bus for any language.
    ///
    /// Endpoints are described at GET /openapi.json; settings and defaults in the proxy
    /// crate's proxy.toml. Prints `proxy listening on http://ADDR`. Stops cleanly on SIGTERM
    /// or SIGINT.
    Proxy(proxy::cli::ProxyArgs),
    /// Run a broker: one shard per core, each on its own port (port_base + shard).
    ///
    /// Settings come from the TOML file given with --config (defaults documented in
    /// engine::config and broker.toml); the flags override it. Prints `shard <id> port <port>`
    /// per shard on stdout. Stops cleanly on SIGTERM or SIGINT.
    Broker(engine::cli::BrokerArgs),
    /// Inspect a queue's segment files on disk (read-only).
    #[command(subcommand)]
    Log(cmd::log::LogCommand),
    /// Administer topics on the brokers of a cluster: create, update, delete, list, stats.
    Admin(cmd::admin::AdminArgs),
    /// Send a message (or each line of stdin) to a topic; prints queue and offset per message.
    Produce(cmd::produce::ProduceArgs),
    /// Print a topic's messages as a member of a consumer group, committing what was printed.
    ///
    /// Prints one line per message: queue, offset, key, tag and the value as text. Runs until
    /// --count messages, --timeout-ms without one, or Ctrl-C/SIGTERM; commits on the way out.
    Consume(cmd::consume::ConsumeArgs),
    /// Send a request to a service topic and print the reply's value.
    Request(cmd::request::RequestArgs),
    /// Print one message's life: when and where it was stored, which groups were pushed it
    /// and when each committed it, and for a request its deadline and reply.
    ///
    /// By --offset (with --queue) or --key, asked of the brokers holding the topic; --json
    /// prints the document the proxy's GET /v1/trace answers. Exits 1 when no such message
    /// is found.
    Trace(cmd::trace::TraceArgs),
    /// Dead-letter topics of consumer groups: list, show, resend to the original topic,
    /// purge.
    ///
    /// A message a group rejects more than [retry] max_redeliveries times lands in
    /// <topic>.DLQ.<group>; see --help of each subcommand and docs/ARCHITECTURE.md §13.2.
    Dlq(cmd::dlq::DlqArgs),
    /// Delayed and half (transactional) messages held per queue: `held stats --topic T`
    /// (docs/ARCHITECTURE.md §13.3-§13.4).
    Held(cmd::held::HeldArgs),
    /// Answer a service topic's requests (--echo or --upper) until Ctrl-C/SIGTERM.
    ///
    /// Prints each request handled and its reply. A stand-in service for demos and tests.
    Respond(cmd::respond::RespondArgs),
    /// Set up security: a first policy (grants) and one token per principal.
    ///
    /// Writes DIR/policy.json (give it to each nameserver as [security] policy_file) and
    /// DIR/<principal>.token (mode 0600) for admin, broker, nameserver, sgs, gsl, proxy and
    /// app, or the --principal names given. See docs/ARCHITECTURE.md §9.
    #[command(subcommand)]
    Security(cmd::security::SecurityCommand),
    /// Make certificates for TLS: `certs dev` writes a development CA, a server certificate
    /// and client certificates (mutual TLS).
    #[command(subcommand)]
    Certs(cmd::certs::CertsCommand),
    /// Benchmark the bus: the `defibus-bench` workloads, run in this process.
    ///
    /// Same flags and output as the `defibus-bench` binary: an embedded nameserver + broker
    /// (or --target), workloads beside raw baselines, DESIGN §8 goals, --json and --plot-dir.
    Bench(bench::Cli),
}

impl Command {
    /// Servers log their life at info; client tools keep stderr for warnings and errors.
    fn default_log_level(&self) -> log::LevelFilter {
        match self {
            Command::Standalone(_)
            | Command::Nameserver(_)
            | Command::Broker(_)
            | Command::Gsl(_) => log::LevelFilter::Info,
            Command::Sgs(args) if args.is_server() => log::LevelFilter::Info,
            Command::Proxy(_) => log::LevelFilter::Info,
            _ => log::LevelFilter::Warn,
        }
    }
}

/// `command` with the exit-code table at the end of its `--help`, and of every subcommand's
/// at every depth (`defibus admin topic create --help` too): clap has no setting that
/// propagates `after_long_help`. A command's own footer (an example) comes first.
fn with_exit_codes(command: clap::Command) -> clap::Command {
    let footer = match command.get_after_long_help() {
        Some(own) => format!("{own}\n\n{}", cmd::shared::EXIT_CODES_HELP),
        None => cmd::shared::EXIT_CODES_HELP.to_owned(),
    };
    let names: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_owned())
        .collect();
    names
        .into_iter()
        .fold(command.after_long_help(footer), |command, name| {
            command.mut_subcommand(name, with_exit_codes)
        })
}

/// The command line, parsed with [`with_exit_codes`]' help.
fn parse() -> Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let mut command = with_exit_codes(Cli::command());
    let matches = command.try_get_matches_from_mut(std::env::args_os())?;
    Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut command))
}

fn main() -> std::process::ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(error) => {
            // --help and --version are "errors" printed on stdout; they succeed.
            let _ = error.print();
            return if error.use_stderr() {
                std::process::ExitCode::from(cmd::shared::EXIT_USAGE)
            } else {
                std::process::ExitCode::SUCCESS
            };
        }
    };
    env_logger::Builder::new()
        .filter_level(
            cli.log_level
                .unwrap_or_else(|| cli.command.default_log_level()),
        )
        .parse_default_env()
        .format_timestamp_micros()
        .init();
    let result = match cli.command {
        Command::Standalone(args) => {
            cmd::standalone::run(args).map(|()| std::process::ExitCode::SUCCESS)
        }
        Command::Nameserver(args) => nameserver::cli::cli_main(&args)
            .map(|()| std::process::ExitCode::SUCCESS)
            .map_err(anyhow::Error::from),
        Command::Gsl(args) => gsl::cli::cli_main(&args)
            .map(|()| std::process::ExitCode::SUCCESS)
            .map_err(anyhow::Error::from),
        Command::Sgs(args) => cmd::sgs::run(args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Proxy(args) => proxy::cli::cli_main(&args)
            .map(|()| std::process::ExitCode::SUCCESS)
            .map_err(anyhow::Error::from),
        Command::Broker(args) => engine::cli::cli_main(&args)
            .map(|()| std::process::ExitCode::SUCCESS)
            .map_err(anyhow::Error::from),
        Command::Log(command) => cmd::log::run(command),
        Command::Admin(args) => cmd::admin::run(args),
        Command::Produce(args) => cmd::produce::run(args),
        Command::Consume(args) => cmd::consume::run(args),
        Command::Request(args) => cmd::request::run(args),
        Command::Respond(args) => cmd::respond::run(args),
        Command::Trace(args) => cmd::trace::run(args),
        Command::Dlq(args) => cmd::dlq::run(args),
        Command::Held(args) => cmd::held::run(args),
        Command::Security(command) => cmd::security::run(command),
        Command::Certs(command) => cmd::certs::run(command),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            log::error!("{}", cmd::shared::error_text(&error));
            exit_code(&error)
        }
    }
}

/// 2 when the command gave up waiting (a client timeout anywhere in the cause chain), else 1.
fn exit_code(error: &anyhow::Error) -> std::process::ExitCode {
    let timed_out = error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<client::ClientError>(),
            Some(client::ClientError::Timeout { .. })
        )
    });
    if timed_out {
        std::process::ExitCode::from(cmd::shared::EXIT_TIMEOUT)
    } else {
        std::process::ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every command, at every depth, says what its exit codes mean.
    #[test]
    fn every_commands_help_ends_with_the_exit_codes() {
        fn check(command: &mut clap::Command, path: &str) {
            let help = command.render_long_help().to_string();
            assert!(
                help.contains("Exit codes:"),
                "{path} --help lacks them:\n{help}"
            );
            // clap's own `help` subcommand prints others' help, not its own.
            for sub in command
                .get_subcommands_mut()
                .filter(|sub| sub.get_name() != "help")
            {
                let path = format!("{path} {}", sub.get_name());
                check(sub, &path);
            }
        }
        let mut command = with_exit_codes(Cli::command());
        command.build();
        check(&mut command, "defibus");
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("defibus").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Every command of the README tour parses (the tour itself runs in scripts/tour.sh).
    #[test]
    fn the_tour_parses() {
        let tour: &[&[&str]] = &[
            &["standalone"],
            &[
                "admin",
                "topic",
                "create",
                "--topic",
                "A10-20190001",
                "--queues",
                "4",
                "--flush",
                "sync",
                "--max-queue-depth",
                "500",
                "--retention-age-ms",
                "none",
            ],
            &["admin", "topic", "list"],
            &["admin", "topic", "stats", "--topic", "A10-20190001"],
            &[
                "produce",
                "--topic",
                "A10-20190001",
                "--key",
                "order-42",
                "hello",
            ],
            &[
                "produce",
                "--topic",
                "A10-20190001",
                "--property",
                "trace=t1",
            ],
            &[
                "consume",
                "--topic",
                "A10-20190001",
                "--group",
                "G1",
                "--from",
                "earliest",
                "--count",
                "4",
                "--timeout-ms",
                "5000",
            ],
            &[
                "respond",
                "--topic",
                "A10-20190002",
                "--group",
                "svc",
                "--upper",
            ],
            &["request", "--topic", "A10-20190002", "hello"],
        ];
        for args in tour {
            if let Err(e) = parse(args) {
                panic!("{args:?}: {e}");
            }
        }
    }

    #[test]
    fn bench_takes_the_bench_command_line() {
        let cli = parse(&[
            "bench",
            "--smoke",
            "--plot-dir",
            "plots",
            "e2e",
            "--rates",
            "1000,5000",
        ])
        .unwrap();
        let Command::Bench(bench) = cli.command else {
            panic!("not bench");
        };
        assert!(bench.global.smoke);
        let help = Cli::command()
            .find_subcommand_mut("bench")
            .expect("bench is a subcommand")
            .render_long_help()
            .to_string();
        for workload in [
            "produce", "rr", "consume", "e2e", "fanout", "scale", "overhead", "all",
        ] {
            assert!(help.contains(workload), "{workload} missing from:\n{help}");
        }
        assert!(parse(&["bench", "nosuchworkload"]).is_err());
    }

    #[test]
    fn bus_flags_have_defaults_and_repeat() {
        let Cli {
            command: Command::Produce(args),
            ..
        } = parse(&["produce", "--topic", "A10-1", "x"]).unwrap()
        else {
            panic!("not produce");
        };
        let debug = format!("{args:?}");
        assert!(debug.contains("\"127.0.0.1:9876\""), "{debug}");
        let cli = parse(&[
            "admin",
            "topic",
            "list",
            "--nameserver",
            "10.0.0.1:9876",
            "--nameserver",
            "10.0.0.2:9876",
        ])
        .unwrap();
        let Command::Admin(args) = cli.command else {
            panic!("not admin");
        };
        let debug = format!("{args:?}");
        assert!(
            debug.contains("10.0.0.1:9876") && debug.contains("10.0.0.2:9876"),
            "{debug}"
        );
        assert!(!debug.contains("127.0.0.1:9876"), "{debug}");
    }

    #[test]
    fn service_commands_parse() {
        let accepted: &[&[&str]] = &[
            &["gsl"],
            &[
                "gsl",
                "--listen-addr",
                "127.0.0.1:0",
                "--data-dir",
                "/tmp/g",
            ],
            &["sgs"],
            &["sgs", "--config", "sgs.toml", "--gsl", "127.0.0.1:9877"],
            &[
                "sgs", "service", "apply", "--id", "20190001", "--name", "payments", "--owner",
                "team-pay", "--areas", "A10,B20", "--queues", "8", "--flush", "sync",
            ],
            &["sgs", "service", "deploy", "--id", "20190001"],
            &[
                "sgs",
                "service",
                "offline",
                "--id",
                "20190001",
                "--sgs",
                "10.0.0.1:9878",
            ],
            &["sgs", "service", "list"],
            &["sgs", "service", "show", "--id", "20190001"],
            // Calls by service id, located through GSL.
            &["request", "--service", "20190001", "hi"],
            &[
                "request",
                "--service",
                "20190001",
                "--gsl",
                "10.0.0.1:9877",
                "hi",
            ],
            &["produce", "--service", "20190001", "--key", "k", "x"],
            &["consume", "--service", "20190001", "--group", "g"],
            &["respond", "--service", "20190001", "--group", "g", "--echo"],
            &[
                "certs",
                "dev",
                "--out",
                "certs",
                "--principal",
                "a",
                "--principal",
                "b",
            ],
        ];
        for args in accepted {
            if let Err(e) = parse(args) {
                panic!("{args:?}: {e}");
            }
        }
        let refused: &[&[&str]] = &[
            &["sgs", "service", "apply", "--id", "20190001"],
            &["sgs", "service", "deploy"],
            &["sgs", "--data-dir", "/tmp/s", "service", "list"],
            // A topic or a service, one of them.
            &["request", "hi"],
            &["request", "--topic", "A10-1", "--service", "20190001", "hi"],
            &["consume", "--group", "g"],
            &["request", "--service", "2019-0001", "hi"],
            &["certs", "dev"],
        ];
        for args in refused {
            assert!(parse(args).is_err(), "{args:?} was accepted");
        }
    }

    #[test]
    fn bad_command_lines_are_refused() {
        let refused: &[&[&str]] = &[
            // Not [area]-[serviceId].
            &["produce", "--topic", "orders", "x"],
            // --count repeats MESSAGE; it means nothing for stdin.
            &["produce", "--topic", "A10-1", "--count", "3"],
            &["produce", "--topic", "A10-1", "--property", "novalue", "x"],
            // A responder needs a handler, and only one.
            &["respond", "--topic", "A10-1", "--group", "g"],
            &[
                "respond", "--topic", "A10-1", "--group", "g", "--echo", "--upper",
            ],
            &[
                "consume", "--topic", "A10-1", "--group", "g", "--from", "middle",
            ],
            &["request", "--topic", "A10-1"],
            &[
                "admin", "topic", "create", "--topic", "A10-1", "--flush", "never",
            ],
            &[
                "admin",
                "topic",
                "create",
                "--topic",
                "A10-1",
                "--retention-age-ms",
                "0",
            ],
            &["produce", "--topic", "A10-1", "--area", "a10", "x"],
        ];
        for args in refused {
            assert!(parse(args).is_err(), "{args:?} was accepted");
        }
    }

    #[test]
    fn timeouts_anywhere_in_the_cause_chain_exit_with_2() {
        let timeout = anyhow::Error::new(client::ClientError::Timeout {
            after: std::time::Duration::from_secs(3),
        })
        .context("no reply from A10-1");
        assert_eq!(
            exit_code(&timeout),
            std::process::ExitCode::from(cmd::shared::EXIT_TIMEOUT)
        );
        assert_eq!(
            exit_code(&anyhow::anyhow!("broken")),
            std::process::ExitCode::FAILURE
        );
    }
}
