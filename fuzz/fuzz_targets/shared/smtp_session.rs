//! The driver shared by the `session_mx`, `session_submission`, `session_odmr` and
//! `session_messenger` targets:
//! the SMTP server session for one service, fed client lines (raw, or canned commands the
//! fuzzer picks by number so it gets past EHLO and AUTH quickly), with every event
//! answered the way the server's driver answers it, accept or refuse as the input says.
//!
//! Checked: no panic and steady progress; the output is a sequence of well-formed replies
//! (read back with our own SMTP client's reply parser), each line within the RFC 5321
//! 4.5.3.1.5 limit of 512 octets; the events are those the service allows (no mail before
//! AUTH on submission, nothing but AUTH and ATRN on ODMR, no ATRN elsewhere); every message
//! has recipients and a CRLF-clean body within the size limit; a closed session stays
//! silent; spilling a body to the driver's spool (on inputs that set a small
//! `memory_body_limit`) changes nothing once header section and spool are put together;
//! and (without STARTTLS, whose discarding depends on what arrived together) the outcome
//! does not depend on how the input is split.

use std::sync::{Arc, OnceLock};

use vouchmail_proto::headers;
use vouchmail_proto::messenger::replies;
use vouchmail_proto::sasl::{CramMd5Secret, Mechanism, Secrets};
use vouchmail_proto::smtp::client::ReplyParser;
use vouchmail_proto::smtp::reply::{EnhancedCode, Reply};
use vouchmail_proto::smtp::session::{
    Event, MessengerAnswer, MessengerRequest, RcramVerdict, Service, Session, SessionConfig, TlsInfo,
};

/// Canned client lines (see `expand`).
const COMMANDS: &[&str] = &[
    "EHLO client.fuzz.test",
    "HELO client.fuzz.test",
    "STARTTLS",
    "AUTH PLAIN AHUAc2VjcmV0", // \0u\0secret
    "AUTH PLAIN",
    "AHUAc2VjcmV0",
    "AUTH LOGIN",
    "dQ==",     // u
    "c2VjcmV0", // secret
    "AUTH EXTERNAL =",
    "AUTH CRAM-MD5",
    "AUTH SCRAM-SHA-256 biwsbj11LHI9ZnV6em5vbmNl", // n,,n=u,r=fuzznonce
    "AUTH SCRAM-SHA-256-PLUS",
    "*",
    "MAIL FROM:<u@fuzz.test>",
    "MAIL FROM:<>",
    "MAIL FROM:<u@fuzz.test> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=x AUTH=u@fuzz.test",
    "MAIL FROM:<élise@fuzz.test> SMTPUTF8",
    "RCPT TO:<a@fuzz.test>",
    "RCPT TO:<Postmaster>",
    "RCPT TO:<b@fuzz.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@fuzz.test",
    "DATA",
    ".",
    "Received: from x",
    "Subject: hi",
    " folded",
    "",
    "BDAT 16",
    "BDAT 16 LAST",
    "BDAT 0 LAST",
    "RSET",
    "NOOP",
    "VRFY u",
    "HELP",
    "QUIT",
    "ATRN",
    "ATRN fuzz.test,other.test",
    "ETRN fuzz.test",
    "ETRN @fuzz.test",
    "CERT u@fuzz.test",
    "CERT <a@remote.test>",
    "CERT 1234567F",
    "PUBCERT",
    "-----BEGIN CERTIFICATE-----",
    "ENTITIES",
    "ENTITIES 7",
    "BOOK smith",
    // Whole steps, so that a few bytes get deep into a session.
    "EHLO client.fuzz.test\r\nAUTH PLAIN AHUAc2VjcmV0",
    "MAIL FROM:<u@fuzz.test>\r\nRCPT TO:<a@fuzz.test>\r\nDATA\r\nSubject: hi\r\n\r\nline one\r\nline two\r\n.",
    // The chunk ends with the CRLF that follows every canned command.
    "MAIL FROM:<u@fuzz.test>\r\nRCPT TO:<a@fuzz.test>\r\nBDAT 35 LAST\r\nSubject: hi\r\n\r\nline one\r\nline two",
];

const MAX_MESSAGE_SIZE: usize = 2048;
const MAX_RECIPIENTS: usize = 3;
const MAX_HOPS: usize = 3;
const SMALL_MEMORY_BODY_LIMIT: usize = 16;

fn config(service: Service, knobs: u8) -> Arc<SessionConfig> {
    // One config per service and knob combination, built once.
    static CONFIGS: OnceLock<Vec<Arc<SessionConfig>>> = OnceLock::new();
    let all = CONFIGS.get_or_init(|| {
        let mut all = Vec::new();
        for service in [Service::Mx, Service::Submission, Service::Odmr, Service::Messenger] {
            for knobs in 0..32u8 {
                let mut c = SessionConfig::new(service, "mx.fuzz.test");
                c.max_message_size = MAX_MESSAGE_SIZE;
                c.max_recipients = MAX_RECIPIENTS;
                c.max_hops = MAX_HOPS;
                c.max_errors = 30;
                c.starttls = knobs & 1 != 0;
                c.allow_plaintext_passwords = knobs & 2 != 0;
                c.trusted_relay = knobs & 4 != 0;
                c.etrn = service == Service::Mx && knobs & 8 != 0;
                c.auth_mechanisms =
                    if service == Service::Mx && knobs & 8 == 0 { Vec::new() } else { Mechanism::ALL.to_vec() };
                c.trusted_auth_assertors = vec!["u".into()];
                if knobs & 16 != 0 {
                    // Bodies past 16 octets go to the driver's spool (Event::BodyChunk).
                    c.memory_body_limit = SMALL_MEMORY_BODY_LIMIT;
                }
                all.push(Arc::new(c));
            }
        }
        all
    });
    let index = match service {
        Service::Mx => 0,
        Service::Submission => 1,
        Service::Odmr => 2,
        Service::Messenger => 3,
    };
    Arc::clone(&all[index * 32 + usize::from(knobs & 31)])
}

/// Cheap secrets (no Argon2id hash, no PBKDF2) so the fuzzer stays fast: PLAIN and LOGIN
/// with "u" / "secret" succeed against the CRAM-MD5 states. Any other user gets an
/// account with another password rather than "no such account", whose dummy Argon2id
/// check (against user enumeration) would slow the fuzzer down a hundredfold.
fn secrets(authcid: &str) -> &'static Secrets {
    static SECRETS: OnceLock<[Secrets; 2]> = OnceLock::new();
    let [user, other] = SECRETS.get_or_init(|| {
        ["secret", "other"].map(|p| Secrets { cram_md5: Some(CramMd5Secret::from_password(p)), ..Secrets::default() })
    });
    if authcid == "u" {
        user
    } else {
        other
    }
}

/// The driver's answers, taken in turn from the input (all "yes" when it gives none).
struct Verdicts<'a> {
    bytes: &'a [u8],
    next: usize,
}

impl Verdicts<'_> {
    fn next(&mut self) -> u8 {
        let v = self.bytes.get(self.next % self.bytes.len().max(1)).copied().unwrap_or(0);
        self.next += 1;
        v
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    output: Vec<u8>,
    events: Vec<Event<()>>,
    tls: bool,
    /// The driver reported a failed spool write.
    spill_failed: bool,
    closed: bool,
    reversed: bool,
}

fn crlf_clean(body: &[u8]) -> bool {
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\r' if body.get(i + 1) == Some(&b'\n') => i += 2,
            b'\r' | b'\n' => return false,
            _ => i += 1,
        }
    }
    true
}

/// The last complete reply in `output`, by its first line's code.
fn last_reply_code(output: &[u8]) -> Option<u16> {
    let mut parser = ReplyParser::default();
    parser.feed(output);
    let mut last = None;
    while let Ok(Some(reply)) = parser.next_reply() {
        last = Some(reply.code);
    }
    last
}

fn check_event(service: Service, session: &Session<()>, event: &Event<()>) {
    // No exhaustive match: events added later (that need no answer) must not break the
    // build; they pass unchecked until a check is written for them.
    if matches!(event, Event::CheckRecipient { .. } | Event::Message(_) | Event::CheckSender { .. }) {
        assert_ne!(service, Service::Odmr, "{event:?} on ODMR");
        assert!(session.greeting().is_some(), "{event:?} before HELO");
        let needs_auth = matches!(service, Service::Submission | Service::Messenger);
        // SPEC 8.2: a 235 to X-RCRAM-VERIFY never lets mail through.
        assert!(!session.is_verified_only(), "{event:?} on a verification-only session");
        if needs_auth || matches!(event, Event::CheckSender { .. }) {
            assert!(session.authenticated().is_some(), "{event:?} without AUTH on {service:?}");
        }
    }
    if let Event::Messenger(request) = event {
        assert_eq!(service, Service::Messenger, "{request:?} outside the Messenger port");
        assert!(session.greeting().is_some(), "{request:?} before HELO");
        if matches!(request, MessengerRequest::Pubcert { .. } | MessengerRequest::Book { .. }) {
            assert!(session.authenticated().is_some(), "{request:?} without AUTH");
        }
        // SPEC 8.1, 8.3: PUBCERT, RECEIPT and TRACK only for a local user, never a remote
        // RCRAM-MD5 identity.
        if matches!(
            request,
            MessengerRequest::Pubcert { .. } | MessengerRequest::Receipt(_) | MessengerRequest::Track { .. }
        ) {
            assert!(session.local_user().is_some(), "{request:?} without local AUTH");
        }
        if let MessengerRequest::Pubcert { pem } = request {
            assert!(pem.len() <= vouchmail_proto::smtp::session::MAX_PEM, "PEM of {} octets", pem.len());
        }
    }
    if let Event::Atrn { .. } = event {
        assert_eq!(service, Service::Odmr, "ATRN outside ODMR");
        assert!(session.authenticated().is_some(), "ATRN without AUTH");
    }
    if let Event::Etrn { .. } = event {
        assert_eq!(service, Service::Mx, "ETRN outside MX");
        assert!(session.config().etrn, "ETRN when not offered");
        assert!(session.greeting().is_some(), "ETRN before HELO");
    }
    if let Event::Message(envelope) = event {
        assert!((1..=MAX_RECIPIENTS).contains(&envelope.recipients.len()));
        assert!(headers::count(&envelope.body, "Received") <= MAX_HOPS);
    }
    if let Event::BodyChunk { chunk, .. } = event {
        assert!(session.config().memory_body_limit < MAX_MESSAGE_SIZE, "spilled a body that fits in memory");
        assert!(!chunk.is_empty(), "empty chunk");
    }
    if let Event::StartTls = event {
        assert!(session.tls().is_none(), "STARTTLS inside TLS");
    }
    // A verified X-RCRAM-VERIFY exchange grants verification only, no login.
    if let Event::AuthFinished { success: true, authcid, via_verifier: false } = event {
        assert_eq!(session.authenticated(), authcid.as_deref());
    }
}

/// One session over `input`, fed in chunks of the given sizes.
fn run(service: Service, knobs: u8, verdicts: &[u8], input: &[u8], splits: &[u8]) -> Outcome {
    let mut session: Session<()> = Session::new(
        config(service, knobs),
        vouchmail_proto::sasl::Fresh::new(1_700_000_000, [1; vouchmail_proto::sasl::SEED_LEN]),
    );
    // Spool writes get their own answers, so that the others do not depend on spilling.
    let mut spill_verdicts = Verdicts { bytes: verdicts, next: 0 };
    let mut verdicts = Verdicts { bytes: verdicts, next: 0 };
    let mut spool: Vec<u8> = Vec::new();
    let mut spill_failed = false;
    let mut output = session.take_output();
    assert_eq!(last_reply_code(&output), Some(220), "no greeting");
    let mut events = Vec::new();
    let mut started_tls = false;
    let mut pos = 0;
    let mut k = 0;
    'session: loop {
        let mut rounds = 0;
        let mut next = session.poll_event();
        while let Some(event) = next.take() {
            rounds += 1;
            assert!(rounds < 10_000, "the session does not make progress");
            check_event(service, &session, &event);
            if let Event::BodyChunk { offset, chunk } = &event {
                // The driver's spool: offset 0 starts a new one.
                if *offset == 0 {
                    spool.clear();
                }
                assert_eq!(*offset, spool.len() as u64, "spool chunks not contiguous");
                spool.extend_from_slice(chunk);
                if spill_verdicts.next() % 8 == 7 {
                    session.spill_failed();
                    spill_failed = true;
                }
                next = session.poll_event();
                continue;
            }
            let event = match event {
                // The message as the driver stores it: the header section, then the spool.
                Event::Message(mut envelope) => {
                    if envelope.spilled > 0 {
                        assert_eq!(envelope.spilled, spool.len() as u64, "spool and envelope disagree");
                        let head = envelope.body.len();
                        envelope.body.extend_from_slice(&spool);
                        assert_eq!(head, headers::body_start(&envelope.body), "kept more than the header section");
                        envelope.spilled = 0;
                    }
                    assert!(crlf_clean(&envelope.body), "body not CRLF-clean");
                    // BDAT bodies get their bare CRs and LFs made into CRLF, which may double them.
                    let limit = if envelope.via_bdat { 2 * MAX_MESSAGE_SIZE } else { MAX_MESSAGE_SIZE };
                    assert!(envelope.body.len() <= limit, "body of {} octets", envelope.body.len());
                    Event::Message(envelope)
                }
                other => other,
            };
            let v = verdicts.next();
            match &event {
                Event::CheckRecipient { .. } => session.recipient_verdict(match v % 4 {
                    0 | 1 => Ok(()),
                    2 => Err(Reply::new(550, EnhancedCode(5, 1, 1), "No such user")),
                    _ => Err(Reply::new(451, EnhancedCode(4, 3, 0), "Try again later")),
                }),
                Event::Message(_) => session.message_verdict(match v % 3 {
                    0 | 1 => Ok("Q1".into()),
                    _ => Err(Reply::new(451, EnhancedCode(4, 3, 0), "Cannot store the message")),
                }),
                Event::CheckSender { .. } => session.sender_verdict(match v % 3 {
                    0 | 1 => Ok(()),
                    _ => Err(Reply::new(553, EnhancedCode(5, 7, 1), "Not your address")),
                }),
                Event::StartTls => {
                    // The 220 goes out before the handshake.
                    output.extend(session.take_output());
                    assert_eq!(last_reply_code(&output), Some(220), "STARTTLS without 220");
                    started_tls = true;
                    if v % 4 == 3 {
                        // The handshake failed: the driver drops the connection.
                        events.push(event);
                        break 'session;
                    }
                    session.tls_started(TlsInfo {
                        version: "TLSv1.3".into(),
                        cipher: "TLS_AES_128_GCM_SHA256".into(),
                        channel_binding: Some(vec![1; 32]),
                        external_identity: (v % 2 == 0).then(|| "u".into()),
                    });
                    assert!(session.is_tls());
                }
                Event::LookupSecrets { authcid } => match v % 4 {
                    0..=2 => next = session.provide_secrets(Some(secrets(authcid))),
                    _ => session.auth_blocked(),
                },
                Event::Atrn { .. } => {
                    if v % 3 == 2 {
                        session.atrn_verdict(Err(Reply::new(453, EnhancedCode(4, 3, 0), "No mail")));
                    } else {
                        session.atrn_verdict(Ok(()));
                        assert!(session.is_reversed());
                    }
                }
                Event::Etrn { .. } => session.etrn_verdict(if v % 2 == 0 {
                    Reply::new(250, EnhancedCode(2, 0, 0), "Queuing started")
                } else {
                    Reply::new(458, EnhancedCode(4, 0, 0), "Unable to queue messages")
                }),
                // SPEC 8.2: the RCRAM steps get the driver's verdicts in turn.
                Event::Messenger(
                    request @ (MessengerRequest::RcramStart { .. }
                    | MessengerRequest::RcramAnswer { .. }
                    | MessengerRequest::VerifyStart { .. }
                    | MessengerRequest::VerifyAnswer { .. }),
                ) => {
                    let start =
                        matches!(request, MessengerRequest::RcramStart { .. } | MessengerRequest::VerifyStart { .. });
                    let verdict = match (v % 4, start, matches!(request, MessengerRequest::RcramStart { .. })) {
                        (0, true, true) => RcramVerdict::Relayed334 { wire: b"334 PDEuMi5yY3JhbS52QGg+\r\n".to_vec() },
                        (0, true, false) => RcramVerdict::Issued { challenge: "<1.2.rcram.v@h>".into() },
                        (0, false, _) => RcramVerdict::Success,
                        (1, _, _) => RcramVerdict::Refused(Reply::rcram_bad_credentials()),
                        _ => RcramVerdict::Unavailable(Reply::rcram_home_unavailable("remote.test")),
                    };
                    next = session.rcram_verdict(verdict);
                }
                Event::Messenger(MessengerRequest::RcramCancel) => {}
                Event::Messenger(request) => session.messenger_verdict(match (request, v % 4) {
                    (MessengerRequest::Cert(target), 0) => {
                        MessengerAnswer::Reply(replies::cert_found(&target.to_string(), b"der"))
                    }
                    // A home server's reply, as the federation client passes it on.
                    (MessengerRequest::Cert(_), 1) => MessengerAnswer::Relayed {
                        code: 250,
                        wire:
                            b"250-a@remote.test\r\n250------BEGIN CERTIFICATE-----\r\n250 -----END CERTIFICATE-----\r\n"
                                .to_vec(),
                    },
                    (MessengerRequest::Cert(_), 2) => MessengerAnswer::Relayed {
                        code: 550,
                        wire: b"550 5.1.1 No such address or published ID: x\r\n".to_vec(),
                    },
                    (MessengerRequest::Entities { since }, _) => MessengerAnswer::Reply(replies::entities(&[], *since)),
                    (MessengerRequest::Book { .. }, _) => MessengerAnswer::Reply(replies::book(&[])),
                    (MessengerRequest::Pubcert { .. }, 0) => MessengerAnswer::Reply(replies::pubcert_stored("u")),
                    (MessengerRequest::Pubcert { .. }, _) => MessengerAnswer::Reply(replies::pubcert_refused("bad")),
                    (_, _) => MessengerAnswer::Reply(replies::home_unreachable("remote.test")),
                }),
                // AuthFinished, and whatever needs no answer.
                _ => {}
            }
            events.push(event);
            if next.is_none() {
                next = session.poll_event();
            }
        }
        output.extend(session.take_output());
        if session.is_reversed() {
            assert_eq!(last_reply_code(&output), Some(250), "reversed without 250");
            break;
        }
        if session.is_closed() {
            // Anything more is ignored.
            session.feed(b"NOOP\r\n");
            assert!(session.poll_event().is_none());
            assert!(session.take_output().is_empty(), "output after the end");
            break;
        }
        if pos >= input.len() {
            break;
        }
        let step = splits.get(k % splits.len().max(1)).map_or(input.len(), |&s| usize::from(s) + 1);
        k += 1;
        let n = step.min(input.len() - pos);
        session.feed(&input[pos..pos + n]);
        pos += n;
    }
    if knobs & 0x80 != 0 && !session.is_closed() {
        // The driver's read timeout: 421, and the session is over.
        session.on_timeout();
        output.extend(session.take_output());
        assert!(session.is_closed());
        assert_eq!(last_reply_code(&output), Some(421));
    }
    Outcome {
        output,
        events,
        tls: started_tls,
        spill_failed,
        closed: session.is_closed(),
        reversed: session.is_reversed(),
    }
}

/// The output as replies: parses with our client's reader, nothing left over, each line
/// within 512 octets.
fn check_output(output: &[u8]) {
    for line in output.split_inclusive(|&b| b == b'\n') {
        assert!(line.ends_with(b"\r\n"), "reply line without CRLF: {:?}", String::from_utf8_lossy(line));
        assert!(line.len() <= 512, "reply line of {} octets: {:?}", line.len(), String::from_utf8_lossy(line));
    }
    let mut parser = ReplyParser::default();
    parser.feed(output);
    loop {
        match parser.next_reply() {
            Ok(Some(reply)) => assert!((200..600).contains(&reply.code), "reply code {}", reply.code),
            Ok(None) => break,
            Err(e) => panic!("malformed reply: {e:?} in {:?}", String::from_utf8_lossy(output)),
        }
    }
    assert_eq!(parser.pending(), 0, "incomplete reply");
}

/// SCRAM challenges carry random nonces: compare runs with them masked.
fn masked(mut outcome: Outcome) -> Outcome {
    let mut out = Vec::with_capacity(outcome.output.len());
    for line in outcome.output.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(if line.starts_with(b"334 ") { b"334 *\r\n" } else { line });
    }
    outcome.output = out;
    outcome
}

/// The fuzz target body: `[knobs, split count, verdict count, splits..., verdicts..., lines...]`.
pub fn fuzz(service: Service, data: &[u8]) {
    let [knobs, nsplits, nverdicts, rest @ ..] = data else { return };
    let (splits, rest) = rest.split_at(usize::from(nsplits % 8).min(rest.len()));
    let (verdicts, script) = rest.split_at(usize::from(nverdicts % 16).min(rest.len()));
    let input = super::script::expand(script, COMMANDS, b"\r\n");

    let whole = masked(run(service, *knobs, verdicts, &input, &[]));
    check_output(&whole.output);
    if knobs & 16 != 0 && !whole.spill_failed {
        // Spilling is invisible: the same replies, and the same messages once the driver
        // puts header section and spool together.
        let in_memory = masked(run(service, knobs & !16, verdicts, &input, &[]));
        assert_eq!(in_memory, whole, "spilling changed the outcome");
    }
    if !whole.tls {
        let split = masked(run(service, *knobs, verdicts, &input, splits));
        assert_eq!(split, whole);
        let bytes = masked(run(service, *knobs, verdicts, &input, &[0]));
        assert_eq!(bytes, whole);
    } else {
        check_output(&run(service, *knobs, verdicts, &input, splits).output);
    }
}
