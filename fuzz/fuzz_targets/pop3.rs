//! The POP3 command parser and server session: never panic on any input, parsed commands
//! survive a write/parse round trip, every output line ends in CRLF, the events name only
//! messages that exist, and (without STLS, whose discarding depends on what arrived
//! together) the result does not depend on how the input is split.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use vouchmail_proto::pop3::session::{Event, MessageInfo, Session, SessionConfig, TlsInfo};
use vouchmail_proto::pop3::{parse_command, Reply};
use vouchmail_proto::sasl::{CramMd5Secret, Mechanism, Secrets};

const MAILDROP: [&[u8]; 3] = [b"Subject: a\r\n\r\n.x\r\n", b"Subject: b\r\n\r\nbody\r\n", b"no header"];

fn config() -> Arc<SessionConfig> {
    static CONFIG: OnceLock<Arc<SessionConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let mut c = SessionConfig::new("fuzz.example");
        c.starttls = true;
        c.auth_mechanisms = Mechanism::ALL.to_vec();
        c.allow_plaintext_passwords = true;
        c.max_errors = 1000;
        Arc::new(c)
    }))
}

/// Cheap secrets (no Argon2id hash) so the fuzzer stays fast.
fn secrets() -> Secrets {
    Secrets { cram_md5: Some(CramMd5Secret::from_password("secret")), ..Secrets::default() }
}

/// Feeds `input` in chunks of the given sizes, answering every event; returns the output
/// and the events seen.
fn run(input: &[u8], splits: &[u8]) -> (Vec<u8>, Vec<Event>) {
    let mut session =
        Session::new(config(), vouchmail_proto::sasl::Fresh::new(1_700_000_000, [1; vouchmail_proto::sasl::SEED_LEN]));
    let mut output = session.take_output();
    let mut events = Vec::new();
    let mut pos = 0;
    let mut k = 0;
    loop {
        let mut next = session.poll_event();
        while let Some(event) = next.take() {
            match &event {
                Event::StartTls => session.tls_started(TlsInfo {
                    external_identity: Some("u".into()),
                    channel_binding: Some(vec![1; 32]),
                    ..TlsInfo::default()
                }),
                Event::LookupSecrets { authcid } => {
                    let s = secrets();
                    next = session.provide_secrets((authcid == "u").then_some(&s));
                }
                Event::AuthFinished { .. } | Event::Downloaded { .. } => {}
                Event::OpenMailbox { .. } => session.mailbox_opened(Ok(MAILDROP
                    .iter()
                    .enumerate()
                    .map(|(i, m)| MessageInfo { uid: format!("uid{i}"), size: m.len() as u64 })
                    .collect())),
                Event::Fetch { number, .. } => {
                    assert!((1..=MAILDROP.len()).contains(number));
                    session.message_loaded(Ok(MAILDROP[number - 1].to_vec()));
                }
                Event::Update { deleted } => {
                    assert!(deleted.iter().all(|n| (1..=MAILDROP.len()).contains(n)));
                    assert!(deleted.windows(2).all(|w| w[0] < w[1]));
                    session.update_done(if deleted.len() == 2 { Err(Reply::update_failed()) } else { Ok(()) });
                }
            }
            events.push(event);
            if next.is_none() {
                next = session.poll_event();
            }
        }
        output.extend(session.take_output());
        if session.is_closed() || (pos >= input.len() && !session.has_buffered_command()) {
            break;
        }
        if pos < input.len() {
            let step = splits.get(k % splits.len().max(1)).map_or(input.len(), |&s| usize::from(s) + 1);
            k += 1;
            let n = step.min(input.len() - pos);
            session.feed(&input[pos..pos + n]);
            pos += n;
        }
    }
    (output, events)
}

/// SASL challenges carry random nonces: compare runs with them masked.
fn masked((output, events): (Vec<u8>, Vec<Event>)) -> (Vec<u8>, Vec<Event>) {
    let mut out = Vec::with_capacity(output.len());
    for line in output.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(if line.starts_with(b"+ ") { b"+ *\r\n" } else { line });
    }
    (out, events)
}

fuzz_target!(|data: &[u8]| {
    // The parser alone, line by line.
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Ok(command) = parse_command(line) {
            let wire = command.to_line();
            let text = wire.strip_suffix("\r\n").unwrap_or(&wire);
            if !text.contains(['\r', '\n']) {
                assert_eq!(parse_command(text.as_bytes()).ok(), Some(command));
            }
        }
    }

    // The whole session, with the first byte choosing the split pattern.
    let Some((&nsplits, rest)) = data.split_first() else { return };
    let (splits, input) = rest.split_at(usize::from(nsplits % 8).min(rest.len()));
    let (output, events) = run(input, splits);
    assert!(output.is_empty() || output.ends_with(b"\r\n"));
    assert!(output.windows(2).all(|w| w[1] != b'\n' || w[0] == b'\r'), "bare LF in output");
    let has_stls = input.windows(4).any(|w| w.eq_ignore_ascii_case(b"STLS"));
    if !has_stls {
        let first = masked((output, events));
        assert_eq!(masked(run(input, &[])), first);
        assert_eq!(masked(run(input, &[0])), first);
    }
});
