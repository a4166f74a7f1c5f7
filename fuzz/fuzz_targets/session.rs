//! The SMTP session state machine on arbitrary client bytes, split arbitrarily: never
//! panics, never hangs, and every reply line it writes is well-formed.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vouchmail_proto::sasl::Mechanism;
use vouchmail_proto::smtp::reply::Reply;
use vouchmail_proto::smtp::session::{Event, Service, Session, SessionConfig, TlsInfo};

fuzz_target!(|input: (u8, Vec<u8>)| {
    let (split, bytes) = input;
    let mut config = SessionConfig::new(Service::Submission, "mx.fuzz.test");
    config.max_message_size = 4096;
    config.starttls = true;
    config.auth_mechanisms = Mechanism::ALL.to_vec();
    let mut session: Session<()> = Session::new(
        Arc::new(config),
        vouchmail_proto::sasl::Fresh::new(1_700_000_000, [1; vouchmail_proto::sasl::SEED_LEN]),
    );
    let step = usize::from(split.max(1));
    let mut output = session.take_output();
    for chunk in bytes.chunks(step) {
        session.feed(chunk);
        let mut rounds = 0;
        while let Some(event) = session.poll_event() {
            rounds += 1;
            assert!(rounds < 100_000, "the session does not make progress");
            match event {
                Event::CheckRecipient { .. } => session.recipient_verdict(Ok(())),
                Event::Message(_) => session.message_verdict(Ok("Q".into())),
                Event::CheckSender { .. } => session.sender_verdict(Err(Reply::not_authorized("no"))),
                Event::StartTls => session.tls_started(TlsInfo::default()),
                Event::LookupSecrets { .. } => {
                    if let Some(Event::AuthFinished { .. }) = session.provide_secrets(None) {}
                }
                Event::Atrn { .. } => session.atrn_verdict(Err(Reply::not_authorized("no"))),
                Event::Etrn { .. } => session.etrn_verdict(Reply::not_authorized("no")),
                // AuthFinished, and whatever needs no answer.
                _ => {}
            }
        }
        output.extend(session.take_output());
    }
    for line in output.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        assert!(line.ends_with(b"\r"), "reply line without CRLF");
        assert!(line.len() >= 4 && line[..3].iter().all(u8::is_ascii_digit), "malformed reply line");
    }
});
