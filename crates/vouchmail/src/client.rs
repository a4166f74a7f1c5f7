//! `vouchmail client --profile FILE <command>` (SPEC 10): a thin shell over
//! `vouchmail_client`. Every failure is one line on stderr and exit status 1.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use vouchmail_client::{Client, ClientError, ContentCipher, FetchTarget, KEYGEN_DAYS};

#[derive(Args)]
pub struct ClientArgs {
    /// The profile (TOML: address, home_server, pop3_server, secret_file, key_file,
    /// cert_file, nameservers, tls_ca_file).
    #[arg(long, value_name = "FILE")]
    profile: PathBuf,
    #[command(subcommand)]
    command: ClientCommand,
}

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Make the user's RSA key and S/MIME certificate (key_file, cert_file; mode 600).
    Keygen {
        /// Days the certificate is valid.
        #[arg(long, default_value_t = KEYGEN_DAYS)]
        days: u32,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Upload the certificate to the home server (PUBCERT).
    Pubcert,
    /// Print the certificate (PEM) of an address or published ID.
    Cert {
        /// An address (user@domain) or a published ID (e.g. a provider number).
        target: String,
        /// Remember this certificate as the address's, in place of the one known (key
        /// continuity: `send` refuses a changed certificate until it is accepted).
        #[arg(long)]
        accept: bool,
    },
    /// Encrypt a message (FILE, or - for standard input) to each recipient and send it.
    Send {
        /// A recipient address or published ID; repeat (or separate by commas) for several.
        #[arg(long = "to", value_name = "ADDRESS|ID", required = true, value_delimiter = ',')]
        to: Vec<String>,
        /// The Subject of the message (outside the encryption, as S/MIME leaves it).
        #[arg(long)]
        subject: Option<String>,
        /// Deliver to each recipient's home server with RCRAM-MD5 instead of the own one.
        #[arg(long)]
        direct: bool,
        /// Content encryption: aes256-cbc (EnvelopedData, read by every S/MIME agent) or
        /// aes256-gcm (S/MIME 4.0 AuthEnvelopedData, RFC 5083: tampering is detected;
        /// `openssl cms -decrypt` reads it, `openssl smime` does not).
        #[arg(long, value_name = "aes256-cbc|aes256-gcm", default_value = "aes256-cbc")]
        cipher: String,
        /// The message text: a file, or - for standard input.
        file: String,
    },
    /// Download, decrypt and store new mail; send RECEIPT for each message.
    Fetch {
        /// One file per message in this directory (default: ./mail).
        #[arg(long = "to", value_name = "DIR", conflicts_with = "mbox")]
        dir: Option<PathBuf>,
        /// Append to this mbox file.
        #[arg(long, value_name = "FILE")]
        mbox: Option<PathBuf>,
    },
    /// Tell the home server a message was decrypted (or not).
    Receipt {
        /// The Message-ID of the message, with or without <>.
        message_id: String,
        /// DECRYPTED or FAILED (SPEC 8.3; any case).
        outcome: String,
    },
    /// The tracking records of messages sent, as CSV lines (SPEC 8.3).
    Track {
        /// Only records at or after this time (RFC 3339, e.g. 2026-12-01T10:00:00Z).
        #[arg(long, value_name = "RFC3339")]
        since: Option<String>,
    },
    /// Search the directory.
    Book {
        /// Text to look for in the published entries' name, organisation, role, mailbox or
        /// ID (case-insensitive; at most 50 entries come back).
        query: String,
    },
}

pub async fn run(args: ClientArgs) -> ExitCode {
    match run_inner(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vouchmail client: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_inner(args: ClientArgs) -> Result<ExitCode, ClientError> {
    let client = Client::from_file(&args.profile)?;
    let mut out = std::io::stdout().lock();
    match args.command {
        ClientCommand::Keygen { days, force } => {
            let cert = client.keygen(days, force)?;
            let _ = writeln!(
                out,
                "key {} and certificate {} for {} (serial {})",
                client.profile.key_file.display(),
                client.profile.cert_file.display(),
                client.profile.address,
                cert.serial_hex()
            );
        }
        ClientCommand::Pubcert => {
            let reply = client.pubcert().await?;
            let _ = writeln!(out, "{reply}");
        }
        ClientCommand::Cert { target, accept: true } => {
            let (address, new, old) = client.accept_cert(&target).await?;
            let _ = match old {
                Some(old) if old != new => writeln!(out, "accepted {new} for {address} (was {old})"),
                Some(_) => writeln!(out, "{address}: {new} was already the known certificate"),
                None => writeln!(out, "accepted {new} for {address}"),
            };
        }
        ClientCommand::Cert { target, accept: false } => {
            let (address, pem) = client.cert(&target).await?;
            if !address.eq_ignore_ascii_case(&target) {
                eprintln!("{target} is {address}");
            }
            let _ = write!(out, "{pem}");
        }
        ClientCommand::Send { to, subject, direct, cipher, file } => {
            // Parsed here rather than by clap, so that a wrong name is one line (exit 1)
            // like every other failure.
            let cipher: ContentCipher = cipher.parse().map_err(|_| {
                ClientError::new(format!(
                    "unknown cipher {cipher:?}: --cipher takes aes256-cbc (the default) or aes256-gcm"
                ))
            })?;
            let input = read_input(&file)?;
            let sent = client.send_with(&to, subject.as_deref(), direct, cipher, &input).await?;
            let _ = writeln!(out, "sent {} to {}", sent.message_id, sent.recipients.join(", "));
            for via in sent.via {
                let _ = writeln!(out, "  {via}");
            }
        }
        ClientCommand::Fetch { dir, mbox } => {
            let target = match (dir, mbox) {
                (_, Some(mbox)) => FetchTarget::Mbox(mbox),
                (Some(dir), None) => FetchTarget::Dir(dir),
                (None, None) => FetchTarget::Dir(PathBuf::from("mail")),
            };
            let fetched = client.fetch(&target).await?;
            let mut receipts_missing = Vec::new();
            for f in &fetched {
                let id = f.message_id.as_deref().unwrap_or("(no Message-ID)");
                let state = match &f.decrypted {
                    Ok(()) => "DECRYPTED".to_string(),
                    Err(why) => format!("FAILED ({why})"),
                };
                let receipt = match &f.receipt {
                    Ok(()) => "receipt sent".to_string(),
                    Err(why) => {
                        receipts_missing.push(why.clone());
                        format!("receipt not sent: {why}")
                    }
                };
                let _ = writeln!(out, "{} {id} {state} -> {}; {receipt}", f.uid, f.written_to.display());
            }
            let _ = writeln!(out, "{} messages", fetched.len());
            if let Some(first) = receipts_missing.first() {
                return Err(ClientError::new(format!(
                    "{} of {} receipts not sent: {first}",
                    receipts_missing.len(),
                    fetched.len()
                )));
            }
        }
        ClientCommand::Receipt { message_id, outcome } => {
            client.receipt(&message_id, &outcome).await?;
            let _ = writeln!(out, "RECEIPT {message_id} {} sent", outcome.to_ascii_uppercase());
        }
        ClientCommand::Track { since } => {
            let records = client.track(since.as_deref()).await?;
            for record in &records {
                let _ = writeln!(out, "{record}");
            }
        }
        ClientCommand::Book { query } => {
            for line in client.book(&query).await? {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_input(file: &str) -> Result<Vec<u8>, ClientError> {
    let mut input = Vec::new();
    if file == "-" {
        std::io::stdin().read_to_end(&mut input).map_err(|e| ClientError::new(format!("standard input: {e}")))?;
    } else {
        input = std::fs::read(file).map_err(|e| ClientError::new(format!("{file}: {e}")))?;
    }
    Ok(input)
}
