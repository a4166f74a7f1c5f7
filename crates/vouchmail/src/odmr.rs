//! `vouchmail odmr fetch`: the ODMR customer (RFC 2645).

use crate::error::CliError;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use vouchmail_server::config::Config;
use vouchmail_server::jobs::odmr_fetch::{customer_timeout, fetch, FetchOptions, FetchOutcome, RelayTimeouts};
use vouchmail_server::net::client_tls::ServerTrust;

#[derive(Subcommand)]
pub enum OdmrCommand {
    /// Take the mail a provider holds for our domains. Exit status: 0 mail taken or none
    /// waiting (the line printed says which), 1 refused or failed, 2 usage.
    Fetch {
        /// The provider's ODMR service, host:port (standard port 366).
        #[arg(long, value_name = "HOST:PORT")]
        provider: String,
        /// Our account at the provider.
        #[arg(long, value_name = "ACCOUNT")]
        user: String,
        /// File whose first line is the password (CRAM-MD5). Without it: standard input.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Domains to ask for (default: every domain the account may take).
        #[arg(long, value_delimiter = ',', value_name = "DOMAIN[,DOMAIN]")]
        domains: Vec<String>,
        /// Relay the reversed session to this SMTP host instead of our own store.
        #[arg(long, value_name = "HOST:PORT")]
        smtphost: Option<String>,
        /// STARTTLS before authenticating. The provider's certificate must be valid for the
        /// host name of --provider under the system's CAs, unless one of the next three
        /// options (each implies --tls) says how else to check it.
        #[arg(long)]
        tls: bool,
        /// PEM CA certificates that issued the provider's certificate (the host name is
        /// still checked).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["tls_fingerprint", "tls_insecure"])]
        tls_ca: Option<PathBuf>,
        /// SHA-256 fingerprint of the provider's certificate, hex, colons allowed (as
        /// `openssl x509 -fingerprint -sha256` prints it): exactly that certificate.
        #[arg(long, value_name = "HEX", conflicts_with = "tls_insecure")]
        tls_fingerprint: Option<String>,
        /// Accept any certificate: encrypted, but the provider is not authenticated, so its
        /// mail is not from a trusted relay and meets our domains' sender policy.
        #[arg(long)]
        tls_insecure: bool,
        /// Client certificate (PEM) for SASL EXTERNAL instead of CRAM-MD5; implies --tls.
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// The client certificate's private key (PEM).
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
    },
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").to_string()
}

pub async fn run(
    config: &Config,
    config_file: Option<&std::path::Path>,
    command: OdmrCommand,
) -> Result<ExitCode, CliError> {
    let OdmrCommand::Fetch {
        provider,
        user,
        password_file,
        domains,
        smtphost,
        tls,
        tls_ca,
        tls_fingerprint,
        tls_insecure,
        cert,
        key,
    } = command;
    let trust = ServerTrust::from_options(tls_ca.as_deref(), tls_fingerprint.as_deref(), tls_insecure)?;
    let password = match (&cert, &password_file) {
        (Some(_), _) => None,
        (None, Some(path)) => Some(first_line(
            &std::fs::read_to_string(path)
                .map_err(|e| CliError::failed(format!("cannot read {}: {e}", path.display())))?,
        )),
        (None, None) => {
            let mut input = String::new();
            std::io::stdin()
                .read_line(&mut input)
                .map_err(|e| CliError::failed(format!("cannot read the password: {e}")))?;
            Some(first_line(&input))
        }
    };
    if password.as_deref() == Some("") {
        return Err(CliError::failed("the password is empty"));
    }
    let options = FetchOptions {
        provider: provider.clone(),
        user,
        password,
        domains: domains.iter().map(|d| d.trim().to_ascii_lowercase()).filter(|d| !d.is_empty()).collect(),
        smtphost: smtphost.clone(),
        tls: tls || cert.is_some() || !trust.is_default(),
        trust,
        client_cert: cert.zip(key),
        helo: config.hostname.clone(),
        timeout: customer_timeout(config),
        relay_timeouts: RelayTimeouts::from_config(config, customer_timeout(config)),
        nameservers: config.nameservers().to_vec(),
    };
    // Without --smtphost the reversed session goes into our own store.
    let store =
        if smtphost.is_none() { Some(crate::store::open_existing_store(config, config_file).await?) } else { None };
    let local = match &store {
        Some(store) => Some(vouchmail_server::customer_context(config, Arc::clone(store), options.trusts_provider())?),
        None => None,
    };
    let outcome = fetch(&options, local).await;
    if let Some(store) = store {
        let _ = store.close().await;
    }
    match outcome? {
        FetchOutcome::Taken { messages: Some(n) } => {
            match smtphost.as_deref() {
                Some(host) => println!("took {n} message(s) from {provider} into {host}"),
                None => println!("took {n} message(s) from {provider}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        FetchOutcome::Taken { messages: None } => {
            println!("took the mail from {provider} into {}", smtphost.unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
        FetchOutcome::NoMail => {
            println!("no mail waiting at {provider}");
            Ok(ExitCode::SUCCESS)
        }
        FetchOutcome::Refused(reply) => {
            eprintln!("vouchmail: {provider} refused: {reply}");
            Ok(ExitCode::FAILURE)
        }
    }
}
