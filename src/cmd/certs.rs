//! `defibus certs dev`: a throwaway CA with server and client certificates, for trying TLS
//! on one machine.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use tls::dev::{DEFAULT_PRINCIPALS, DevCerts, Overwrite, SERVER_NAMES, VALIDITY_DAYS};

/// Certificates for TLS.
#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Write a development CA, a server certificate for localhost and one client certificate
    /// per principal (mutual TLS).
    ///
    /// All ECDSA P-256, valid one year. The server certificate is valid for localhost,
    /// 127.0.0.1 and ::1; each client certificate's Common Name is its principal, which is
    /// what ACLs name. Keys are written readable by their owner only. For development only:
    /// the CA key is written beside the certificates it signed.
    #[command(after_long_help = "Example:\n  \
        defibus certs dev --out certs\n  \
        defibus certs dev --out certs --principal billing --principal admin --force")]
    Dev(DevArgs),
}

/// `defibus certs dev`.
#[derive(Args, Debug)]
pub struct DevArgs {
    /// Directory to write to (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// A client principal to issue a certificate for; repeat for several [default: admin,
    /// broker, nameserver, sgs, gsl, proxy, app].
    #[arg(long = "principal", value_name = "NAME")]
    principals: Vec<String>,
    /// Replace certificates and keys that exist (a new CA: every old certificate stops
    /// verifying against it).
    #[arg(long)]
    force: bool,
}

pub fn run(command: CertsCommand) -> anyhow::Result<ExitCode> {
    match command {
        CertsCommand::Dev(args) => dev(&args),
    }
}

fn dev(args: &DevArgs) -> anyhow::Result<ExitCode> {
    let principals: Vec<&str> = if args.principals.is_empty() {
        DEFAULT_PRINCIPALS.to_vec()
    } else {
        args.principals.iter().map(String::as_str).collect()
    };
    let overwrite = if args.force {
        Overwrite::Yes
    } else {
        Overwrite::No
    };
    let certs = tls::dev::generate_to(&args.out, &principals, overwrite)
        .with_context(|| format!("writing dev certificates to {}", args.out.display()))?;
    print!("{}", summary(&certs));
    Ok(ExitCode::SUCCESS)
}

/// What was written and the configuration lines that use it.
fn summary(certs: &DevCerts) -> String {
    let show = |path: &Path| path.display().to_string();
    let mut out = format!(
        "wrote to {} (valid {VALIDITY_DAYS} days):\n  CA          {} (key {})\n  \
         server      {} (key {}) for {}\n",
        show(&certs.dir),
        show(&certs.ca),
        show(&certs.ca_key),
        show(&certs.server_cert),
        show(&certs.server_key),
        SERVER_NAMES.join(", "),
    );
    for (principal, cert, key) in &certs.clients {
        out.push_str(&format!(
            "  {principal:<11} {} (key {})\n",
            show(cert),
            show(key)
        ));
    }
    let own = |principal: &str| {
        certs
            .clients
            .iter()
            .find(|(name, ..)| name == principal)
            .map(|(_, cert, key)| (show(cert), show(key)))
    };
    out.push_str(&format!(
        "\nbroker.toml:\n  [tls]\n  cert = {:?}\n  key = {:?}\n  ca = {:?}\n  \
         client_auth = \"required\"\n",
        show(&certs.server_cert),
        show(&certs.server_key),
        show(&certs.ca),
    ));
    if let Some((cert, key)) = own("broker") {
        // The broker connects to the nameservers and its leaders: as itself, over mutual TLS.
        out.push_str(&format!(
            "  client_cert = {cert:?}\n  client_key = {key:?}\n"
        ));
    }
    out.push_str(&format!(
        "\nor: defibus broker --tls-cert {} --tls-key {} --tls-ca {}\n",
        show(&certs.server_cert),
        show(&certs.server_key),
        show(&certs.ca),
    ));
    out.push_str(&format!(
        "a whole bus on TLS: defibus standalone --tls {}\n",
        show(&certs.dir)
    ));
    out.push_str(&format!(
        "\nthe defibus CLI: --tls-ca {} (or DEFIBUS_TLS_CA)",
        show(&certs.ca)
    ));
    if let Some((principal, cert, key)) = certs.clients.last() {
        out.push_str(&format!(
            "; as {principal:?} by certificate: --tls-cert {} --tls-key {}\n",
            show(cert),
            show(key),
        ));
        out.push_str(&format!(
            "a Rust client as {principal:?}: ClientConfig::with_tls(TlsSettings {{ cert: {:?}, \
             key: {:?}, ca: {:?}, .. }})\n",
            show(cert),
            show(key),
            show(&certs.ca),
        ));
    } else {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_files_prints_config_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let args = DevArgs {
            out: dir.path().join("certs"),
            principals: vec!["billing".into()],
            force: false,
        };
        dev(&args).unwrap();
        let certs = DevCerts::plan(&args.out, &["billing"]).unwrap();
        assert!(certs.files().iter().all(|f| f.exists()));
        let text = summary(&certs);
        assert!(text.contains("billing.pem"), "{text}");
        assert!(text.contains("[tls]\n  cert = "), "{text}");
        assert!(text.contains("--tls-ca "), "{text}");
        assert!(text.contains("standalone --tls "), "{text}");
        let err = dev(&args).unwrap_err();
        assert!(format!("{err:#}").contains("--force"), "{err:#}");
        dev(&DevArgs {
            force: true,
            ..args
        })
        .unwrap();
    }
}
