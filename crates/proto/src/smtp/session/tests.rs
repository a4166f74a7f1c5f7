//! Unit tests of the session state machine: every command and every reply code it uses.

use std::sync::Arc;

use super::*;
use crate::sasl::Mechanism;
use crate::smtp::address::Address;

/// Recipients under `local.example` exist, `full@local.example` is over quota, everything
/// else is refused as a relay attempt: a tiny stand-in for the server's resolver.
fn verdict(path: &ForwardPath) -> Result<String, Reply> {
    match path {
        ForwardPath::Postmaster => Ok("postmaster".into()),
        ForwardPath::Mailbox(a) if a.domain() != "local.example" => Err(Reply::not_authorized("Relaying denied")),
        ForwardPath::Mailbox(a) if a.local() == "full" => Err(Reply::mailbox_full("Mailbox full")),
        ForwardPath::Mailbox(a) if a.local() == "nobody" => Err(Reply::unknown_user("No such user")),
        ForwardPath::Mailbox(a) => Ok(a.to_string()),
    }
}

struct Harness {
    session: Session<String>,
    messages: Vec<Envelope<String>>,
    commit_result: Option<Reply>,
    /// (authcid, success, via_verifier) of each AuthFinished.
    auth_outcomes: Vec<(Option<String>, bool, bool)>,
    block_auth: bool,
    /// What the session spilled ([`Event::BodyChunk`]), as a driver's spool file would hold it.
    spool: Vec<u8>,
    fail_spill: bool,
    /// Every Messenger request the session raised.
    messenger: Vec<MessengerRequest>,
}

/// `user@local.example` / `pencil`, derived once (Argon2id is slow in debug builds).
fn user_secrets() -> &'static crate::sasl::Secrets {
    static SECRETS: std::sync::OnceLock<crate::sasl::Secrets> = std::sync::OnceLock::new();
    SECRETS.get_or_init(|| crate::sasl::Secrets::from_password("pencil", &[3; crate::sasl::SALTS_LEN]).unwrap())
}

impl Harness {
    fn new() -> Harness {
        Harness::with(SessionConfig::new(Service::Mx, "mx.local.example"))
    }

    fn with(config: SessionConfig) -> Harness {
        let mut h = Harness {
            session: Session::new(Arc::new(config), crate::sasl::Fresh::new(1_700_000_000, [5; crate::sasl::SEED_LEN])),
            messages: Vec::new(),
            commit_result: None,
            auth_outcomes: Vec::new(),
            block_auth: false,
            spool: Vec::new(),
            fail_spill: false,
            messenger: Vec::new(),
        };
        let greeting = h.output();
        assert_eq!(greeting, "220 mx.local.example ESMTP vouchmail\r\n");
        h
    }

    /// Feeds bytes, runs the driver loop, returns everything the server wrote.
    fn send(&mut self, bytes: &[u8]) -> String {
        self.session.feed(bytes);
        self.run();
        self.output()
    }

    fn run(&mut self) {
        let mut next = self.session.poll_event();
        while let Some(event) = next {
            match event {
                Event::CheckRecipient { path, .. } => self.session.recipient_verdict(verdict(&path)),
                Event::Message(envelope) => {
                    self.messages.push(envelope);
                    match self.commit_result.clone() {
                        Some(reply) => self.session.message_verdict(Err(reply)),
                        None => self.session.message_verdict(Ok(format!("Q{}", self.messages.len()))),
                    }
                }
                Event::CheckSender { from } => {
                    let allowed = from.address().is_none_or(|a| a.local() == "user");
                    self.session.sender_verdict(if allowed {
                        Ok(())
                    } else {
                        Err(Reply::new(553, crate::smtp::reply::EnhancedCode(5, 7, 1), "Not yours"))
                    });
                }
                Event::StartTls => self.session.tls_started(TlsInfo {
                    version: "TLSv1.3".into(),
                    cipher: "TLS13_AES_128_GCM_SHA256".into(),
                    channel_binding: Some(vec![7; 32]),
                    external_identity: Some("user@local.example".into()),
                }),
                Event::LookupSecrets { authcid } => {
                    if self.block_auth {
                        self.session.auth_blocked();
                    } else {
                        let secrets = (authcid == "user@local.example").then(user_secrets);
                        next = self.session.provide_secrets(secrets);
                        continue;
                    }
                }
                Event::AuthFinished { authcid, success, via_verifier } => {
                    self.auth_outcomes.push((authcid, success, via_verifier))
                }
                Event::BodyChunk { offset, chunk } => {
                    if offset == 0 {
                        self.spool.clear();
                    }
                    assert_eq!(offset, self.spool.len() as u64, "chunks arrive in order");
                    if self.fail_spill {
                        self.session.spill_failed();
                    } else {
                        self.spool.extend_from_slice(&chunk);
                    }
                }
                Event::Atrn { domains } => {
                    let verdict = match domains.as_slice() {
                        [] => Ok(()),
                        [d] if d == "example.org" => Ok(()),
                        [d] if d == "empty.example" => {
                            Err(Reply::new(453, crate::smtp::reply::EnhancedCode(4, 0, 0), "You have no mail"))
                        }
                        _ => Err(Reply::new(450, crate::smtp::reply::EnhancedCode(4, 7, 1), "ATRN request refused")),
                    };
                    self.session.atrn_verdict(verdict);
                }
                Event::Etrn { node } if node == "empty.example" => self.session.etrn_verdict(Reply::new(
                    251,
                    crate::smtp::reply::EnhancedCode(2, 0, 0),
                    format!("No messages waiting for node {node}"),
                )),
                Event::Messenger(request) => {
                    self.messenger.push(request.clone());
                    if let Some(verdict) = rcram_answer(&request) {
                        if let Some(event) = self.session.rcram_verdict(verdict) {
                            next = Some(event);
                            continue;
                        }
                    } else if !matches!(request, MessengerRequest::RcramCancel | MessengerRequest::VerifyCancel { .. })
                    {
                        self.session.messenger_verdict(messenger_answer(&request));
                    }
                }
                Event::Etrn { node } => self.session.etrn_verdict(Reply::new(
                    250,
                    crate::smtp::reply::EnhancedCode(2, 0, 0),
                    format!("Queuing for node {node} started"),
                )),
            }
            next = self.session.poll_event();
        }
    }

    fn output(&mut self) -> String {
        String::from_utf8(self.session.take_output()).unwrap()
    }

    fn codes(&mut self, bytes: &[u8]) -> Vec<String> {
        self.send(bytes)
            .lines()
            .filter(|l| l.len() >= 4 && &l[3..4] == " ")
            .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
            .collect()
    }

    fn ready() -> Harness {
        let mut h = Harness::new();
        h.send(b"EHLO client.example\r\n");
        h
    }
}

#[test]
fn ehlo_lists_extensions() {
    let mut h = Harness::new();
    let out = h.send(b"EHLO client.example\r\n");
    assert!(out.starts_with("250-mx.local.example\r\n"), "{out}");
    for ext in ["PIPELINING", "SIZE 26214400", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING"] {
        assert!(out.contains(ext), "missing {ext} in {out}");
    }
    assert!(out.ends_with("250 CHUNKING\r\n"));
    assert_eq!(h.session.greeting().unwrap().name, "client.example");
}

#[test]
fn helo_gives_plain_reply() {
    let mut h = Harness::new();
    assert_eq!(h.send(b"HELO client.example\r\n"), "250 mx.local.example\r\n");
    assert!(!h.session.greeting().unwrap().extended);
}

#[test]
fn full_transaction_with_data() {
    let mut h = Harness::ready();
    assert_eq!(h.codes(b"MAIL FROM:<a@remote.example>\r\n"), ["250 2.1.0"]);
    assert_eq!(h.codes(b"RCPT TO:<u@local.example>\r\n"), ["250 2.1.5"]);
    assert_eq!(h.send(b"DATA\r\n"), "354 End data with <CR><LF>.<CR><LF>\r\n");
    assert_eq!(h.send(b"Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\n"), "250 2.0.0 Ok: queued as Q1\r\n");
    let m = &h.messages[0];
    assert_eq!(m.body, b"Subject: hi\r\n\r\n.dot\r\nbody\r\n");
    assert_eq!(m.recipients.len(), 1);
    assert_eq!(m.recipients[0].resolved, "u@local.example");
    assert!(!m.via_bdat);
    assert_eq!(h.session.messages_accepted(), 1);
    // The transaction is over: a new MAIL is accepted.
    assert_eq!(h.codes(b"MAIL FROM:<>\r\n"), ["250 2.1.0"]);
}

#[test]
fn an_idle_session_gives_back_the_input_room_a_message_grew() {
    let mut h = Harness::ready();
    assert_eq!(h.codes(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<u@local.example>\r\n"), ["250 2.1.0", "250 2.1.5"]);
    assert_eq!(h.send(b"DATA\r\n"), "354 End data with <CR><LF>.<CR><LF>\r\n");
    let body = format!("Subject: big\r\n\r\n{}.\r\n", "0123456789abcdef\r\n".repeat(4096));
    assert_eq!(h.send(body.as_bytes()), "250 2.0.0 Ok: queued as Q1\r\n");
    assert!(h.session.input.is_empty() && h.session.input.capacity() > IDLE_INPUT_CAPACITY);
    h.session.release_idle_buffers();
    assert_eq!(h.session.input.capacity(), 0);
    // Half a command line stays where it is, and the session goes on as before.
    h.session.feed(b"NO");
    h.session.release_idle_buffers();
    assert_eq!(h.codes(b"OP\r\n"), ["250 2.0.0"]);
}

#[test]
fn pipelined_transaction_in_one_write() {
    let mut h = Harness::ready();
    let out = h.codes(b"MAIL FROM:<a@r.example>\r\nRCPT TO:<u@local.example>\r\nRCPT TO:<x@elsewhere.example>\r\nRCPT TO:<v@local.example>\r\nDATA\r\nhello\r\n.\r\nQUIT\r\n");
    assert_eq!(out, ["250 2.1.0", "250 2.1.5", "550 5.7.1", "250 2.1.5", "354 End", "250 2.0.0", "221 2.0.0"]);
    assert_eq!(h.messages[0].recipients.len(), 2);
    assert!(h.session.is_closed());
}

#[test]
fn split_input_any_boundary() {
    let script = b"EHLO c\r\nMAIL FROM:<a@r.example>\r\nRCPT TO:<u@local.example>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n";
    let mut h = Harness::new();
    let mut out = String::new();
    for byte in script {
        out.push_str(&h.send(&[*byte]));
    }
    assert!(out.contains("250 2.0.0 Ok: queued as Q1"), "{out}");
    assert_eq!(h.messages[0].body, b"x\r\n");
}

#[test]
fn mail_needs_helo() {
    let mut h = Harness::new();
    assert_eq!(h.codes(b"MAIL FROM:<a@b.example>\r\n"), ["503 5.5.1"]);
}

#[test]
fn nested_mail_refused() {
    let mut h = Harness::ready();
    h.send(b"MAIL FROM:<a@b.example>\r\n");
    assert_eq!(h.codes(b"MAIL FROM:<a@b.example>\r\n"), ["503 5.5.1"]);
}

#[test]
fn rcpt_needs_mail_and_data_needs_rcpt() {
    let mut h = Harness::ready();
    assert_eq!(h.codes(b"RCPT TO:<u@local.example>\r\n"), ["503 5.5.1"]);
    assert_eq!(h.codes(b"DATA\r\n"), ["503 5.5.1"]);
    h.send(b"MAIL FROM:<a@b.example>\r\n");
    assert_eq!(h.codes(b"DATA\r\n"), ["554 5.5.1"]);
}

#[test]
fn recipient_verdicts_pass_through() {
    let mut h = Harness::ready();
    h.send(b"MAIL FROM:<a@b.example>\r\n");
    assert_eq!(h.codes(b"RCPT TO:<full@local.example>\r\n"), ["452 4.2.2"]);
    assert_eq!(h.codes(b"RCPT TO:<nobody@local.example>\r\n"), ["550 5.1.1"]);
    assert_eq!(h.codes(b"RCPT TO:<u@remote.example>\r\n"), ["550 5.7.1"]);
    assert_eq!(h.codes(b"RCPT TO:<postmaster>\r\n"), ["250 2.1.5"]);
}

#[test]
fn too_many_recipients_is_452() {
    let mut config = SessionConfig::new(Service::Mx, "mx.local.example");
    config.max_recipients = 2;
    let mut h = Harness::with(config);
    h.send(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n");
    assert_eq!(
        h.codes(b"RCPT TO:<a@local.example>\r\nRCPT TO:<b@local.example>\r\nRCPT TO:<c@local.example>\r\n"),
        ["250 2.1.5", "250 2.1.5", "452 4.5.3"]
    );
}

#[test]
fn declared_size_over_limit_is_552() {
    let mut config = SessionConfig::new(Service::Mx, "mx.local.example");
    config.max_message_size = 100;
    let mut h = Harness::with(config);
    h.send(b"EHLO c\r\n");
    assert_eq!(h.codes(b"MAIL FROM:<a@b.example> SIZE=101\r\n"), ["552 5.3.4"]);
    assert_eq!(h.codes(b"MAIL FROM:<a@b.example> SIZE=100\r\n"), ["250 2.1.0"]);
}

#[test]
fn data_over_limit_is_552_and_session_survives() {
    let mut config = SessionConfig::new(Service::Mx, "mx.local.example");
    config.max_message_size = 10;
    let mut h = Harness::with(config);
    h.send(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@local.example>\r\nDATA\r\n");
    assert_eq!(h.codes(b"0123456789abcdef\r\n.\r\n"), ["552 5.3.4"]);
    assert!(h.messages.is_empty());
    assert_eq!(h.codes(b"NOOP\r\n"), ["250 2.0.0"]);
}

#[test]
fn long_data_line_is_500_5_5_2() {
    let mut h = Harness::ready();
    h.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<u@local.example>\r\nDATA\r\n");
    let mut body = vec![b'x'; 1200];
    body.extend_from_slice(b"\r\n.\r\n");
    assert_eq!(h.codes(&body), ["500 5.5.2"]);
    assert!(h.messages.is_empty());
    assert_eq!(h.codes(b"RSET\r\n"), ["250 2.0.0"]);
}

#[test]
fn long_command_line_is_500_5_5_2_and_session_continues() {
    let mut h = Harness::ready();
    let mut line = b"NOOP ".to_vec();
    line.extend(vec![b'a'; 600]);
    line.extend_from_slice(b"\r\n");
    assert_eq!(h.codes(&line), ["500 5.5.2"]);
    // A line so long it never ends in one read is skipped until its LF.
    let huge = vec![b'b'; 20_000];
    assert_eq!(h.codes(&huge), Vec::<String>::new());
    assert_eq!(h.codes(b"bbb\r\nNOOP\r\n"), ["500 5.5.2", "250 2.0.0"]);
}

#[test]
fn bare_lf_never_ends_data() {
    let mut h = Harness::ready();
    h.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<u@local.example>\r\nDATA\r\n");
    // Smuggling attempt: "\n.\n" and "\n.\r\n" followed by a second transaction.
    let out = h.send(b"Subject: a\r\n\r\nx\n.\nMAIL FROM:<evil@r.example>\r\nRCPT TO:<v@local.example>\r\nDATA\r\nsmuggled\n.\r\nstill body\r\n");
    assert_eq!(out, "");
    assert!(h.messages.is_empty());
    assert_eq!(h.codes(b".\r\n"), ["250 2.0.0"]);
    assert_eq!(h.messages.len(), 1);
    let body = String::from_utf8(h.messages[0].body.clone()).unwrap();
    assert!(body.contains("MAIL FROM:<evil@r.example>") && body.contains("still body"));
}

#[test]
fn bare_cr_never_ends_data() {
    let mut h = Harness::ready();
    h.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<u@local.example>\r\nDATA\r\n");
    assert_eq!(h.send(b"x\r.\rQUIT\r\n"), "");
    assert!(!h.session.is_closed());
    assert_eq!(h.codes(b".\r\n"), ["250 2.0.0"]);
}

#[test]
fn bdat_chunks() {
    let mut h = Harness::ready();
    h.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<u@local.example>\r\n");
    assert_eq!(h.codes(b"BDAT 5\r\nhello"), ["250 2.0.0"]);
    assert_eq!(h.codes(b"BDAT 7 LAST\r\n world\n"), ["250 2.0.0"]);
    assert_eq!(h.messages[0].body, b"hello world\r\n");
    assert!(h.messages[0].via_bdat);
}

#[test]
fn bdat_pipelined_with_commands_after() {
    let mut h = Harness::ready();
    let out =
        h.codes(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<u@local.example>\r\nBDAT 11 LAST\r\nQUIT\r\nabc\r\nNOOP\r\n");
    assert_eq!(out, ["250 2.1.0", "250 2.1.5", "250 2.0.0", "250 2.0.0"]);
    // The chunk's content is data, never a command.
    assert_eq!(h.messages[0].body, b"QUIT\r\nabc\r\n");
    assert!(!h.session.is_closed());
}

#[test]
fn bdat_errors_still_consume_the_chunk() {
    let mut h = Harness::ready();
    assert_eq!(h.codes(b"BDAT 6\r\nQUIT\r\n"), ["503 5.5.1"]);
    assert!(!h.session.is_closed());
    h.send(b"MAIL FROM:<a@b.example>\r\n");
    assert_eq!(h.codes(b"BDAT 4 LAST\r\nNOOP"), ["554 5.5.1"]);
    h.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<u@local.example>\r\nBDAT 1\r\nx");
    assert_eq!(h.codes(b"DATA\r\n"), ["503 5.5.1"]);
    assert_eq!(h.codes(b"RCPT TO:<v@local.example>\r\n"), ["503 5.5.1"]);
}

#[test]
fn bdat_over_size_is_552() {
    let mut config = SessionConfig::new(Service::Mx, "mx.local.example");
    config.max_message_size = 8;
    let mut h = Harness::with(config);
    h.send(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@local.example>\r\n");
    assert_eq!(h.codes(b"BDAT 5\r\n12345BDAT 5 LAST\r\n67890"), ["250 2.0.0", "552 5.3.4"]);
    assert!(h.messages.is_empty());
    assert_eq!(h.codes(b"RCPT TO:<u@local.example>\r\n"), ["503 5.5.1"]);
}

#[test]
fn received_loop_is_554() {
    let mut h = Harness::ready();
    h.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<u@local.example>\r\nDATA\r\n");
    let mut body = String::new();
    for i in 0..51 {
        body.push_str(&format!("Received: from hop{i} by x; Thu, 01 Jan 1970 00:00:00 +0000\r\n"));
    }
    body.push_str("\r\nloop\r\n.\r\n");
    assert_eq!(h.codes(body.as_bytes()), ["554 5.4.6"]);
    assert!(h.messages.is_empty());
}

#[test]
fn commit_failure_is_reported_and_session_continues() {
    let mut h = Harness::ready();
    h.commit_result = Some(Reply::local_error("Store unavailable"));
    assert_eq!(
        h.codes(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<u@local.example>\r\nDATA\r\nx\r\n.\r\n"),
        ["250 2.1.0", "250 2.1.5", "354 End", "451 4.3.0"]
    );
    assert_eq!(h.codes(b"MAIL FROM:<a@b.example>\r\n"), ["250 2.1.0"]);
}

#[test]
fn rset_noop_vrfy_expn_help_quit() {
    let mut h = Harness::ready();
    h.send(b"MAIL FROM:<a@b.example>\r\n");
    assert_eq!(h.codes(b"RSET\r\n"), ["250 2.0.0"]);
    assert!(h.session.sender().is_none());
    assert_eq!(h.codes(b"NOOP anything\r\n"), ["250 2.0.0"]);
    assert_eq!(h.codes(b"VRFY u\r\n"), ["252 2.1.5"]);
    assert_eq!(h.codes(b"EXPN list\r\n"), ["502 5.5.1"]);
    assert_eq!(h.codes(b"HELP\r\n"), ["214 2.0.0"]);
    assert_eq!(h.codes(b"FOO\r\n"), ["500 5.5.1"]);
    assert_eq!(h.codes(b"QUIT\r\n"), ["221 2.0.0"]);
    assert!(h.session.is_closed());
    // Nothing after QUIT is executed.
    assert_eq!(h.send(b"NOOP\r\n"), "");
}

#[test]
fn not_yet_available_commands_are_502() {
    let mut h = Harness::ready();
    assert_eq!(h.codes(b"STARTTLS\r\n"), ["502 5.5.1"]);
    assert_eq!(h.codes(b"AUTH PLAIN\r\n"), ["502 5.5.1"]);
    assert_eq!(h.codes(b"ETRN example.org\r\n"), ["502 5.5.1"]);
}

#[test]
fn submission_requires_auth() {
    let mut h = Harness::with(SessionConfig::new(Service::Submission, "mx.local.example"));
    h.send(b"EHLO c\r\n");
    assert_eq!(h.codes(b"MAIL FROM:<a@local.example>\r\n"), ["530 5.7.0"]);
}

#[test]
fn smtputf8_required_for_non_ascii() {
    let mut h = Harness::ready();
    assert_eq!(h.codes("MAIL FROM:<jörg@b.example>\r\n".as_bytes()), ["553 5.6.7"]);
    assert_eq!(h.codes("MAIL FROM:<jörg@b.example> SMTPUTF8\r\n".as_bytes()), ["250 2.1.0"]);
    assert_eq!(h.codes("RCPT TO:<ü@local.example>\r\n".as_bytes()), ["250 2.1.5"]);
    h.send(b"RSET\r\nMAIL FROM:<a@b.example>\r\n");
    assert_eq!(h.codes("RCPT TO:<ü@local.example>\r\n".as_bytes()), ["553 5.6.7"]);
}

#[test]
fn dsn_parameters_are_kept() {
    let mut h = Harness::ready();
    h.send(b"MAIL FROM:<a@b.example> RET=HDRS ENVID=xyz\r\nRCPT TO:<u@local.example> NOTIFY=FAILURE,DELAY ORCPT=rfc822;u@local.example\r\nDATA\r\nx\r\n.\r\n");
    let m = &h.messages[0];
    assert_eq!(m.params.envid.as_deref(), Some("xyz"));
    assert_eq!(m.params.ret, Some(crate::smtp::command::DsnReturn::Headers));
    let notify = m.recipients[0].params.notify.unwrap();
    assert!(notify.failure && notify.delay && !notify.success);
    assert_eq!(m.recipients[0].params.orcpt.as_ref().unwrap().1, "u@local.example");
}

#[test]
fn auth_param_from_untrusted_client_becomes_empty() {
    let mut h = Harness::ready();
    h.send(b"MAIL FROM:<a@b.example> AUTH=someone@b.example\r\nRCPT TO:<u@local.example>\r\nDATA\r\nx\r\n.\r\n");
    assert_eq!(h.messages[0].params.auth, Some(crate::smtp::command::AuthParam::Unauthenticated));
    h.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<u@local.example>\r\nDATA\r\nx\r\n.\r\n");
    assert_eq!(h.messages[1].params.auth, None);
}

#[test]
fn too_many_errors_closes_with_421() {
    let mut config = SessionConfig::new(Service::Mx, "mx.local.example");
    config.max_errors = 3;
    let mut h = Harness::with(config);
    assert_eq!(h.codes(b"X\r\nY\r\nZ\r\nNOOP\r\n"), ["500 5.5.1", "500 5.5.1", "500 5.5.1", "421 4.7.0"]);
    assert!(h.session.is_closed());
}

#[test]
fn timeout_and_shutdown_close_with_421() {
    let mut h = Harness::ready();
    h.session.on_timeout();
    assert_eq!(h.codes(b""), ["421 4.4.2"]);
    assert!(h.session.is_closed());
    let mut h = Harness::ready();
    assert!(h.session.is_idle());
    h.session.on_shutdown();
    assert_eq!(h.codes(b""), ["421 4.3.2"]);
}

#[test]
fn read_timeout_depends_on_state() {
    let mut h = Harness::ready();
    assert_eq!(h.session.read_timeout(), Duration::from_secs(300));
    h.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<u@local.example>\r\nDATA\r\n");
    assert_eq!(h.session.read_timeout(), Duration::from_secs(180));
}

#[test]
fn helo_resets_transaction() {
    let mut h = Harness::ready();
    h.send(b"MAIL FROM:<a@b.example>\r\n");
    h.send(b"EHLO again\r\n");
    assert!(h.session.sender().is_none());
    assert_eq!(h.codes(b"RCPT TO:<u@local.example>\r\n"), ["503 5.5.1"]);
}

#[test]
fn source_route_and_relay_tricks_resolve_by_final_domain() {
    let mut h = Harness::ready();
    h.send(b"MAIL FROM:<a@b.example>\r\n");
    // The route is dropped; the resolver sees u@local.example.
    assert_eq!(h.codes(b"RCPT TO:<@relay.example:u@local.example>\r\n"), ["250 2.1.5"]);
    // %-hack and bang paths stay in the local part; the domain decides, and here it is remote.
    assert_eq!(h.codes(b"RCPT TO:<u%local.example@remote.example>\r\n"), ["550 5.7.1"]);
    assert_eq!(h.codes(b"RCPT TO:<\"u@remote.example\"@elsewhere.example>\r\n"), ["550 5.7.1"]);
    h.send(b"RCPT TO:<u%remote.example@local.example>\r\nDATA\r\nx\r\n.\r\n");
    let resolved: Vec<_> = h.messages[0].recipients.iter().map(|r| r.resolved.clone()).collect();
    assert_eq!(resolved, ["u@local.example", "u%remote.example@local.example"]);
    let expected = Address::parse("u%remote.example@local.example").unwrap();
    assert_eq!(h.messages[0].recipients[1].path, ForwardPath::Mailbox(expected));
}

fn b64(s: &str) -> String {
    crate::sasl::encode_challenge(s.as_bytes())
}

fn auth_config(service: Service) -> SessionConfig {
    let mut config = SessionConfig::new(service, "mx.local.example");
    config.starttls = true;
    config.auth_mechanisms = vec![
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha256,
        Mechanism::CramMd5,
        Mechanism::Plain,
        Mechanism::Login,
        Mechanism::External,
    ];
    config
}

/// EHLO, STARTTLS, EHLO again.
fn tls_harness(service: Service) -> Harness {
    let mut h = Harness::with(auth_config(service));
    h.send(b"EHLO c\r\n");
    assert_eq!(h.codes(b"STARTTLS\r\n"), ["220 2.0.0"]);
    h.send(b"EHLO c\r\n");
    h
}

#[test]
fn clear_channel_offers_no_plain_text_mechanisms() {
    let mut h = Harness::with(auth_config(Service::Submission));
    let out = h.send(b"EHLO c\r\n");
    assert!(out.contains("250-STARTTLS\r\n"), "{out}");
    assert!(out.contains("250-AUTH SCRAM-SHA-256 CRAM-MD5\r\n"), "{out}");
    assert_eq!(h.codes(b"AUTH PLAIN AHVzZXIAcGVuY2ls\r\n"), ["538 5.7.11"]);
    assert_eq!(h.codes(b"AUTH LOGIN\r\n"), ["538 5.7.11"]);
    assert_eq!(h.codes(b"AUTH EXTERNAL =\r\n"), ["504 5.5.4"]);
    assert_eq!(h.codes(b"AUTH GSSAPI\r\n"), ["504 5.5.4"]);
}

#[test]
fn pipelined_commands_after_starttls_are_discarded() {
    let mut h = Harness::with(auth_config(Service::Mx));
    h.send(b"EHLO c\r\n");
    // One write: STARTTLS and a MAIL behind it. Only the 220 may come back.
    let out = h.codes(b"STARTTLS\r\nMAIL FROM:<x@remote.example>\r\nRCPT TO:<user@local.example>\r\n");
    assert_eq!(out, ["220 2.0.0"]);
    assert!(h.session.is_tls());
    assert!(h.session.sender().is_none());
    // The server forgot the EHLO: MAIL and AUTH need a new one.
    assert_eq!(h.codes(b"MAIL FROM:<x@remote.example>\r\n"), ["503 5.5.1"]);
    assert_eq!(h.codes(b"AUTH PLAIN AHVzZXJAbG9jYWwuZXhhbXBsZQBwZW5jaWw=\r\n"), ["503 5.5.1"]);
    let ehlo = h.send(b"EHLO c\r\n");
    assert!(!ehlo.contains("STARTTLS"));
    assert!(ehlo.contains("AUTH SCRAM-SHA-256-PLUS SCRAM-SHA-256 CRAM-MD5 PLAIN LOGIN EXTERNAL"), "{ehlo}");
    assert_eq!(h.codes(b"STARTTLS\r\n"), ["503 5.5.1"]);
    assert_eq!(h.codes(b"MAIL FROM:<x@remote.example>\r\n"), ["250 2.1.0"]);
}

#[test]
fn starttls_rules() {
    let mut h = Harness::ready();
    assert_eq!(h.codes(b"STARTTLS\r\n"), ["502 5.5.1"]);
    let mut h = Harness::with(auth_config(Service::Mx));
    assert_eq!(h.codes(b"STARTTLS\r\n"), ["503 5.5.1"]);
    h.send(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n");
    assert_eq!(h.codes(b"STARTTLS\r\n"), ["503 5.5.1"]);
    assert_eq!(h.codes(b"STARTTLS now\r\n"), ["501 5.5.4"]);
}

#[test]
fn auth_plain_with_initial_response_then_rules() {
    let mut h = tls_harness(Service::Submission);
    let ir = b64("\0user@local.example\0pencil");
    assert_eq!(h.codes(format!("AUTH PLAIN {ir}\r\n").as_bytes()), ["235 2.7.0"]);
    assert_eq!(h.session.authenticated(), Some("user@local.example"));
    assert_eq!(h.auth_outcomes, [(Some("user@local.example".to_string()), true, false)]);
    assert_eq!(h.codes(format!("AUTH PLAIN {ir}\r\n").as_bytes()), ["503 5.5.1"]);
    // No AUTH line in EHLO after success.
    assert!(!h.send(b"EHLO c\r\n").contains("AUTH"));
    // EHLO did not forget the authentication.
    assert_eq!(h.session.authenticated(), Some("user@local.example"));
    assert_eq!(h.codes(b"MAIL FROM:<user@local.example>\r\n"), ["250 2.1.0"]);
    assert_eq!(h.codes(b"RCPT TO:<u@local.example>\r\nDATA\r\nx\r\n.\r\n"), ["250 2.1.5", "354 End", "250 2.0.0"]);
}

#[test]
fn auth_inside_a_transaction_is_503() {
    let mut h = tls_harness(Service::Mx);
    h.send(b"MAIL FROM:<a@b.example>\r\n");
    let ir = b64("\0user@local.example\0pencil");
    assert_eq!(h.codes(format!("AUTH PLAIN {ir}\r\n").as_bytes()), ["503 5.5.1"]);
    h.send(b"RSET\r\n");
    assert_eq!(h.codes(format!("AUTH PLAIN {ir}\r\n").as_bytes()), ["235 2.7.0"]);
}

#[test]
fn auth_plain_without_initial_response_gets_empty_334() {
    let mut h = tls_harness(Service::Submission);
    assert_eq!(h.send(b"AUTH PLAIN\r\n"), "334 \r\n");
    let response = b64("\0user@local.example\0pencil");
    assert_eq!(h.codes(format!("{response}\r\n").as_bytes()), ["235 2.7.0"]);
}

#[test]
fn bad_password_is_535_and_counted_and_session_stays_usable() {
    let mut h = tls_harness(Service::Submission);
    let ir = b64("\0user@local.example\0wrong");
    assert_eq!(h.codes(format!("AUTH PLAIN {ir}\r\n").as_bytes()), ["535 5.7.8"]);
    assert_eq!(h.auth_outcomes, [(Some("user@local.example".to_string()), false, false)]);
    let unknown = b64("\0ghost@local.example\0pencil");
    assert_eq!(h.codes(format!("AUTH PLAIN {unknown}\r\n").as_bytes()), ["535 5.7.8"]);
    assert_eq!(h.codes(b"NOOP\r\n"), ["250 2.0.0"]);
    let ir = b64("\0user@local.example\0pencil");
    assert_eq!(h.codes(format!("AUTH PLAIN {ir}\r\n").as_bytes()), ["235 2.7.0"]);
}

#[test]
fn cancel_and_garbage_in_the_exchange() {
    let mut h = tls_harness(Service::Submission);
    assert_eq!(h.send(b"AUTH LOGIN\r\n"), format!("334 {}\r\n", b64("Username:")));
    assert_eq!(h.codes(b"*\r\n"), ["501 5.0.0"]);
    // A cancel is not a password guess.
    assert!(h.auth_outcomes.is_empty());
    assert_eq!(h.codes(b"AUTH PLAIN !!!notbase64\r\n"), ["501 5.5.2"]);
    h.send(b"AUTH LOGIN\r\n");
    assert_eq!(h.codes(b"%%%\r\n"), ["501 5.5.2"]);
    assert_eq!(h.codes(b"NOOP\r\n"), ["250 2.0.0"]);
    // An over-long exchange line ends the exchange, and the session goes on.
    h.send(b"AUTH LOGIN\r\n");
    let long = format!("{}\r\n", "A".repeat(13_000));
    assert_eq!(h.codes(long.as_bytes()), ["500 5.5.6"]);
    assert_eq!(h.codes(b"NOOP\r\n"), ["250 2.0.0"]);
}

#[test]
fn login_exchange() {
    let mut h = tls_harness(Service::Submission);
    assert_eq!(h.send(b"AUTH LOGIN\r\n"), format!("334 {}\r\n", b64("Username:")));
    assert_eq!(
        h.send(format!("{}\r\n", b64("user@local.example")).as_bytes()),
        format!("334 {}\r\n", b64("Password:"))
    );
    assert_eq!(h.codes(format!("{}\r\n", b64("pencil")).as_bytes()), ["235 2.7.0"]);
}

#[test]
fn every_mechanism_against_the_client_side() {
    use crate::sasl::{ClientSession, Credentials};
    for mechanism in
        [Mechanism::ScramSha256Plus, Mechanism::ScramSha256, Mechanism::CramMd5, Mechanism::Plain, Mechanism::Login]
    {
        let mut h = tls_harness(Service::Submission);
        let mut client = ClientSession::new(mechanism, Credentials::new("user@local.example", "pencil"))
            .with_random_nonce(&[4; crate::sasl::NONCE_RANDOM_LEN]);
        if mechanism == Mechanism::ScramSha256Plus {
            client = client.with_channel_binding(vec![7; 32]);
        }
        let initial = client.initial_response().unwrap();
        let command = match &initial {
            Some(ir) => format!("AUTH {} {}\r\n", mechanism.name(), crate::sasl::encode_initial_response(ir)),
            None => format!("AUTH {}\r\n", mechanism.name()),
        };
        let mut out = h.send(command.as_bytes());
        let mut rounds = 0;
        while let Some(challenge) = out.strip_prefix("334 ") {
            let raw = crate::sasl::decode_challenge(challenge.trim_end().as_bytes()).unwrap();
            let response = client.step(&raw).unwrap();
            out = h.send(format!("{}\r\n", crate::sasl::encode_response(&response)).as_bytes());
            rounds += 1;
            assert!(rounds < 5);
        }
        assert!(out.starts_with("235 2.7.0"), "{mechanism}: {out}");
    }
}

#[test]
fn external_with_empty_initial_response() {
    let mut h = tls_harness(Service::Submission);
    assert_eq!(h.codes(b"AUTH EXTERNAL =\r\n"), ["235 2.7.0"]);
    assert_eq!(h.session.authenticated(), Some("user@local.example"));
}

#[test]
fn blocked_client_gets_454() {
    let mut h = tls_harness(Service::Submission);
    h.block_auth = true;
    let ir = b64("\0user@local.example\0pencil");
    assert_eq!(h.codes(format!("AUTH PLAIN {ir}\r\n").as_bytes()), ["454 4.7.0"]);
    assert!(h.session.authenticated().is_none());
    // A refusal is no guess at a password: nothing to count.
    assert!(h.auth_outcomes.is_empty());
}

#[test]
fn submission_sender_must_be_owned() {
    let mut h = tls_harness(Service::Submission);
    let ir = b64("\0user@local.example\0pencil");
    h.send(format!("AUTH PLAIN {ir}\r\n").as_bytes());
    assert_eq!(h.codes(b"MAIL FROM:<boss@local.example>\r\n"), ["553 5.7.1"]);
    assert!(h.session.sender().is_none());
    assert_eq!(h.codes(b"MAIL FROM:<user@local.example> AUTH=user@local.example\r\n"), ["250 2.1.0"]);
    h.send(b"RCPT TO:<u@local.example>\r\nDATA\r\nx\r\n.\r\n");
    assert_eq!(h.messages[0].params.auth, Some(crate::smtp::command::AuthParam::Identity("user@local.example".into())));
    // Asserting someone else's identity is not trusted.
    h.send(
        b"MAIL FROM:<user@local.example> AUTH=boss@local.example\r\nRCPT TO:<u@local.example>\r\nDATA\r\nx\r\n.\r\n",
    );
    assert_eq!(h.messages[1].params.auth, Some(crate::smtp::command::AuthParam::Unauthenticated));
}

fn odmr_harness() -> Harness {
    let mut config = SessionConfig::new(Service::Odmr, "mx.local.example");
    config.auth_mechanisms = vec![Mechanism::CramMd5, Mechanism::External];
    config.allow_plaintext_passwords = true;
    config.auth_mechanisms.push(Mechanism::Plain);
    Harness::with(config)
}

#[test]
fn odmr_ehlo_offers_auth_atrn_and_enhanced_codes_only() {
    let mut h = odmr_harness();
    let out = h.send(b"EHLO customer.example\r\n");
    assert_eq!(out, "250-mx.local.example\r\n250-AUTH CRAM-MD5 PLAIN\r\n250-ENHANCEDSTATUSCODES\r\n250 ATRN\r\n");
}

#[test]
fn odmr_other_commands_are_502_and_atrn_needs_auth() {
    let mut h = odmr_harness();
    h.send(b"EHLO customer.example\r\n");
    for cmd in [
        "MAIL FROM:<a@b.example>",
        "RCPT TO:<a@b.example>",
        "DATA",
        "VRFY x",
        "HELO x",
        "ETRN example.org",
        "BDAT 0 LAST",
    ] {
        assert_eq!(h.codes(format!("{cmd}\r\n").as_bytes()), ["502 5.5.1"], "{cmd}");
    }
    assert_eq!(h.codes(b"ATRN example.org\r\n"), ["530 5.7.0"]);
    assert_eq!(h.codes(b"NOOP\r\nRSET\r\n"), ["250 2.0.0", "250 2.0.0"]);
}

#[test]
fn odmr_atrn_verdicts_and_reversal() {
    let mut h = odmr_harness();
    h.send(b"EHLO customer.example\r\n");
    let ir = b64("\0user@local.example\0pencil");
    assert_eq!(h.codes(format!("AUTH PLAIN {ir}\r\n").as_bytes()), ["235 2.7.0"]);
    assert_eq!(h.codes(b"ATRN other.example\r\n"), ["450 4.7.1"]);
    assert_eq!(h.codes(b"ATRN empty.example\r\n"), ["453 4.0.0"]);
    // The customer's greeting may arrive in the same read as the ATRN.
    assert_eq!(h.codes(b"ATRN example.org\r\n220 customer ready\r\n"), ["250 2.0.0"]);
    assert!(h.session.is_reversed() && h.session.is_closed());
    assert_eq!(h.session.take_unread_input(), b"220 customer ready\r\n");
}

#[test]
fn etrn_only_when_enabled_on_mx() {
    let mut h = Harness::ready();
    assert_eq!(h.codes(b"ETRN example.org\r\n"), ["502 5.5.1"]);
    let mut config = SessionConfig::new(Service::Mx, "mx.local.example");
    config.etrn = true;
    let mut h = Harness::with(config);
    assert_eq!(h.codes(b"ETRN example.org\r\n"), ["503 5.5.1"]);
    assert!(h.send(b"EHLO c\r\n").contains("250-ETRN\r\n"));
    assert_eq!(h.codes(b"ETRN example.org\r\n"), ["250 2.0.0"]);
    h.send(b"MAIL FROM:<a@b.example>\r\n");
    assert_eq!(h.codes(b"ETRN example.org\r\n"), ["503 5.5.1"]);
    assert_eq!(h.codes(b"ATRN\r\n"), ["502 5.5.1"]);
}

/// A harness whose sessions keep at most `limit` octets of body in memory.
fn spilling(limit: usize) -> Harness {
    let mut config = SessionConfig::new(Service::Mx, "mx.local.example");
    config.memory_body_limit = limit;
    let mut h = Harness::with(config);
    h.send(b"EHLO client.example\r\n");
    h.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<u@local.example>\r\n");
    h
}

fn big_body() -> (Vec<u8>, Vec<u8>) {
    let head = b"Received: from x\r\nSubject: big\r\n\r\n".to_vec();
    let mut body = head.clone();
    for i in 0..6000 {
        body.extend_from_slice(format!("line {i:05} of a large message, long enough to add up\r\n").as_bytes());
    }
    (head, body)
}

#[test]
fn a_large_data_body_spills_all_but_its_header_section() {
    let (head, body) = big_body();
    for piece in [1 << 20, 4096, 777] {
        let mut h = spilling(16 * 1024);
        assert_eq!(h.codes(b"DATA\r\n"), ["354 End"]);
        let mut wire = body.clone();
        wire.extend_from_slice(b".\r\n");
        let mut out = String::new();
        for part in wire.chunks(piece) {
            out += &h.send(part);
        }
        assert!(out.starts_with("250 2.0.0"), "{out}");
        let m = &h.messages[0];
        assert_eq!(m.body, head, "the header section stays in memory");
        assert_eq!(m.spilled, h.spool.len() as u64);
        let mut whole = m.body.clone();
        whole.extend_from_slice(&h.spool);
        assert_eq!(whole, body, "split at {piece}");
    }
}

#[test]
fn a_small_body_never_spills() {
    let mut h = spilling(16 * 1024);
    h.send(b"DATA\r\nSubject: s\r\n\r\nsmall\r\n.\r\n");
    assert_eq!(h.messages[0].spilled, 0);
    assert!(h.spool.is_empty());
    assert_eq!(h.messages[0].body, b"Subject: s\r\n\r\nsmall\r\n");
}

#[test]
fn a_large_bdat_body_spills_with_crlf_split_across_chunks() {
    let (head, body) = big_body();
    let mut h = spilling(16 * 1024);
    // Bare LF line ends, and one CRLF split between two chunks.
    let mut raw: Vec<u8> = body.iter().copied().filter(|&b| b != b'\r').collect();
    raw.extend_from_slice(b"end\r");
    let (first, second) = raw.split_at(raw.len() / 2);
    let mut wire = format!("BDAT {}\r\n", first.len()).into_bytes();
    wire.extend_from_slice(first);
    wire.extend_from_slice(format!("BDAT {} LAST\r\n", second.len() + 1).as_bytes());
    wire.extend_from_slice(second);
    wire.extend_from_slice(b"\n");
    assert_eq!(h.codes(&wire), ["250 2.0.0", "250 2.0.0"]);
    let m = &h.messages[0];
    assert!(m.via_bdat);
    assert_eq!(m.body, head);
    let mut whole = m.body.clone();
    whole.extend_from_slice(&h.spool);
    let mut expected = body.clone();
    expected.extend_from_slice(b"end\r\n");
    assert_eq!(whole, expected);
}

#[test]
fn memory_budget_refuses_with_452() {
    let mut h = spilling(16 * 1024);
    h.session.set_memory_pressure(true);
    assert_eq!(h.codes(b"DATA\r\n"), ["452 4.3.1"]);
    assert_eq!(h.codes(b"BDAT 3 LAST\r\nabc"), ["452 4.3.1"]);
    h.session.set_memory_pressure(false);
    h.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<u@local.example>\r\n");
    assert_eq!(h.codes(b"DATA\r\nSubject: x\r\n\r\n"), ["354 End"]);
    // Over budget while the data arrives: read to the end, then 452.
    h.session.memory_exhausted();
    assert_eq!(h.session.buffered_len(), 0);
    assert_eq!(h.codes(b"more\r\n.\r\nNOOP\r\n"), ["452 4.3.1", "250 2.0.0"]);
    assert!(h.messages.is_empty());
}

#[test]
fn a_failed_spill_is_a_temporary_error() {
    let (_, body) = big_body();
    let mut h = spilling(16 * 1024);
    h.fail_spill = true;
    h.send(b"DATA\r\n");
    let mut wire = body;
    wire.extend_from_slice(b".\r\n");
    assert_eq!(h.codes(&wire), ["451 4.3.0"]);
    assert!(h.messages.is_empty());
}

#[test]
fn an_endless_header_section_gets_552() {
    let mut h = spilling(16 * 1024);
    h.send(b"DATA\r\n");
    let mut wire = Vec::new();
    while wire.len() <= MAX_HEADER_SECTION {
        wire.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
    }
    wire.extend_from_slice(b".\r\n");
    assert_eq!(h.codes(&wire), ["552 5.3.4"]);
    assert!(h.session.buffered_len() < 1024);
}

#[test]
fn progress_counts_whole_lines_and_data_blocks() {
    let mut h = Harness::ready();
    let before = h.session.progress();
    h.send(b"NO");
    assert_eq!(h.session.progress(), before, "half a line is no progress");
    h.send(b"OP\r\n");
    assert_eq!(h.session.progress(), before + 1);
    h.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<u@local.example>\r\nDATA\r\n");
    let at_data = h.session.progress();
    h.send(&[b'a'; 100]);
    assert_eq!(h.session.progress(), at_data, "a trickle of data is no progress");
    h.send(&vec![b'a'; 20_000]);
    assert!(h.session.progress() >= at_data + 2);
}

#[test]
fn etrn_past_the_cap_is_458_without_the_driver_and_counts_as_an_error() {
    let mut config = SessionConfig::new(Service::Mx, "mx.local.example");
    config.etrn = true;
    config.max_etrn = 2;
    config.max_errors = 4;
    let mut h = Harness::with(config);
    h.send(b"EHLO c\r\n");
    // The harness's driver answers 250 to every ETRN it is asked about.
    assert_eq!(h.codes(b"ETRN a.example\r\nETRN b.example\r\n"), ["250 2.0.0", "250 2.0.0"]);
    assert_eq!(
        h.send(b"ETRN c.example\r\n"),
        "458 4.7.0 Unable to queue messages for node c.example: too many ETRN commands in this session\r\n"
    );
    assert_eq!(h.codes(b"ETRN a.example\r\nETRN a.example\r\n"), ["458 4.7.0", "458 4.7.0"]);
    // The fourth error closes the session.
    assert_eq!(h.codes(b"ETRN a.example\r\n"), ["458 4.7.0", "421 4.7.0"]);
    assert!(h.session.is_closed());
}

#[test]
fn etrn_251_counts_towards_the_error_limit() {
    let mut config = SessionConfig::new(Service::Mx, "mx.local.example");
    config.etrn = true;
    config.max_errors = 3;
    let mut h = Harness::with(config);
    h.send(b"EHLO c\r\n");
    assert_eq!(h.codes(b"ETRN empty.example\r\nETRN empty.example\r\n"), ["251 2.0.0", "251 2.0.0"]);
    // The third 251 reaches max_errors: the session ends.
    assert_eq!(h.codes(b"ETRN empty.example\r\n"), ["251 2.0.0", "421 4.7.0"]);
    assert!(h.session.is_closed());
}

/// A stand-in for the Messenger driver: local.example is ours, everything else is relayed
/// from a home server that does not know the address.
fn messenger_answer(request: &MessengerRequest) -> MessengerAnswer {
    use crate::messenger::{replies, CertTarget};
    match request {
        MessengerRequest::Cert(CertTarget::Address(a)) if a.domain() == "local.example" => {
            MessengerAnswer::Reply(replies::cert_found(&a.to_string(), b"certificate"))
        }
        MessengerRequest::Cert(CertTarget::Address(_)) => {
            MessengerAnswer::Relayed { code: 550, wire: b"550 5.1.1 No such address or published ID: x\r\n".to_vec() }
        }
        MessengerRequest::Cert(CertTarget::PublishedId(id)) => {
            MessengerAnswer::Reply(replies::cert_unknown(id.as_str()))
        }
        MessengerRequest::Pubcert { pem } if pem.starts_with("-----BEGIN CERTIFICATE-----\n") => {
            MessengerAnswer::Reply(replies::pubcert_stored("user@local.example"))
        }
        MessengerRequest::Pubcert { .. } => MessengerAnswer::Reply(replies::pubcert_refused("Not a certificate")),
        MessengerRequest::Entities { since } => MessengerAnswer::Reply(replies::entities(&[], *since)),
        MessengerRequest::Book { .. } => MessengerAnswer::Reply(replies::book(&[])),
        MessengerRequest::Notify(record) if record.sender_domain() == "local.example" => {
            MessengerAnswer::Reply(Reply::tracking_stored())
        }
        MessengerRequest::Notify(record) if record.sender_domain() == "rogue.example" => {
            MessengerAnswer::Reply(Reply::notify_not_home_server(record.recipient_domain()))
        }
        MessengerRequest::Notify(record) => MessengerAnswer::Reply(Reply::notify_unknown_sender(&record.sender)),
        MessengerRequest::Receipt(receipt) if receipt.message_id == "<known@x.example>" => {
            MessengerAnswer::Reply(Reply::tracking_stored())
        }
        MessengerRequest::Receipt(receipt) => {
            MessengerAnswer::Reply(Reply::receipt_no_such_message(&receipt.message_id))
        }
        MessengerRequest::Track { .. } => MessengerAnswer::Reply(crate::messenger::tracking::track_reply(&[])),
        other => panic!("not a messenger_verdict request: {other:?}"),
    }
}

/// The RCRAM half of the stand-in driver (SPEC 8.2): home.example's home server knows
/// `user@home.example` and its answer `right`; down.example's cannot be reached. As a
/// home server, this one refuses the verifier name `rogue.example` from the caller's IP,
/// knows only `user@local.example`, and takes the answer `good`.
fn rcram_answer(request: &MessengerRequest) -> Option<RcramVerdict> {
    Some(match request {
        MessengerRequest::RcramStart { address } if address.ends_with("@down.example") => {
            RcramVerdict::Unavailable(Reply::rcram_home_unavailable("down.example"))
        }
        MessengerRequest::RcramStart { .. } => {
            RcramVerdict::Relayed334 { wire: b"334 PDEuMi5yY3JhbS5teC5sb2NhbC5leGFtcGxlQGhvbWU+\r\n".to_vec() }
        }
        MessengerRequest::RcramAnswer { line, .. } if *line == b64("user@home.example right") => RcramVerdict::Success,
        MessengerRequest::RcramAnswer { .. } => RcramVerdict::Refused(Reply::rcram_bad_credentials()),
        MessengerRequest::VerifyStart { verifier, .. } if verifier == "rogue.example" => {
            RcramVerdict::Refused(Reply::rcram_verifier_refused(verifier))
        }
        MessengerRequest::VerifyStart { address, .. } if address != "user@local.example" => {
            RcramVerdict::Refused(Reply::rcram_bad_credentials())
        }
        MessengerRequest::VerifyStart { verifier, .. } => {
            RcramVerdict::Issued { challenge: format!("<1.2.rcram.{verifier}@mx.local.example>") }
        }
        MessengerRequest::VerifyAnswer { response, .. } if response == b"user@local.example good" => {
            RcramVerdict::Success
        }
        MessengerRequest::VerifyAnswer { .. } => RcramVerdict::Refused(Reply::rcram_bad_credentials()),
        _ => return None,
    })
}

fn rcram_login(h: &mut Harness) {
    assert_eq!(h.send(b"AUTH RCRAM-MD5 user@home.example\r\n"), "334 PDEuMi5yY3JhbS5teC5sb2NhbC5leGFtcGxlQGhvbWU+\r\n");
    let answer = format!("{}\r\n", b64("user@home.example right"));
    assert_eq!(h.send(answer.as_bytes()), "235 2.7.0 Authenticated as user@home.example (remote)\r\n");
}

#[test]
fn messenger_ehlo_offers_tracking_verbs_and_rcram_mechanisms() {
    let mut h = Harness::with(auth_config(Service::Messenger));
    let out = h.send(b"EHLO c\r\n");
    for keyword in ["250-NOTIFY\r\n", "250-RECEIPT\r\n", "250-TRACK\r\n", " RCRAM-MD5 X-RCRAM-VERIFY\r\n"] {
        assert!(out.contains(keyword), "{keyword} in {out}");
    }
    let mut mx = Harness::ready();
    let out = mx.send(b"EHLO c\r\n");
    assert!(!out.contains("RCRAM") && !out.contains("NOTIFY"), "{out}");
    let record =
        "2026-12-01T10:00:00Z,<id@local.example>,glen@local.example,abc@remote.example,downloaded,mx.remote.example";
    let verbs = format!("NOTIFY {record}\r\nRECEIPT <a@b> FAILED\r\nTRACK\r\n");
    assert_eq!(mx.codes(verbs.as_bytes()), ["502 5.5.1", "502 5.5.1", "502 5.5.1"]);
}

#[test]
fn rcram_relays_the_challenge_and_the_answer_unchanged() {
    let mut h = messenger_harness();
    rcram_login(&mut h);
    assert_eq!(h.messenger[0], MessengerRequest::RcramStart { address: "user@home.example".into() });
    assert_eq!(
        h.messenger[1],
        MessengerRequest::RcramAnswer { address: "user@home.example".into(), line: b64("user@home.example right") }
    );
    assert!(h.session.is_remote_authenticated());
    assert_eq!(h.session.local_user(), None);
    // SPEC 8.2: MAIL FROM only that address, RCPT decided by the driver, CERT and BOOK
    // allowed; PUBCERT, RECEIPT and TRACK need a local account.
    assert_eq!(h.codes(b"MAIL FROM:<other@home.example>\r\n"), ["553 5.7.1"]);
    assert_eq!(h.codes(b"MAIL FROM:<>\r\n"), ["553 5.7.1"]);
    assert_eq!(h.codes(b"MAIL FROM:<User@home.example>\r\n"), ["250 2.1.0"]);
    assert_eq!(h.codes(b"RSET\r\nBOOK smith\r\n"), ["250 2.0.0", "250 0"]);
    assert_eq!(h.codes(b"PUBCERT\r\nTRACK\r\nRECEIPT <known@x.example> DECRYPTED\r\n"), ["530 5.7.0"; 3]);
    assert_eq!(h.codes(b"AUTH RCRAM-MD5 user@home.example\r\n"), ["503 5.5.1"]);
    // The success is reported, so the client becomes familiar to the address (SPEC 3).
    assert_eq!(h.auth_outcomes, [(Some("user@home.example".to_string()), true, false)]);
}

#[test]
fn rcram_refusals_count_and_unreachable_is_454() {
    let mut h = messenger_harness();
    h.send(b"AUTH RCRAM-MD5 user@home.example\r\n");
    let wrong = format!("{}\r\n", b64("user@home.example wrong"));
    assert_eq!(h.codes(wrong.as_bytes()), ["535 5.7.8"]);
    assert_eq!(h.auth_outcomes, [(Some("user@home.example".to_string()), false, false)]);
    assert_eq!(h.codes(b"AUTH RCRAM-MD5 user@down.example\r\n"), ["454 4.7.0"]);
    assert_eq!(h.auth_outcomes.len(), 1, "454 is not a failed attempt");
    // Cancel: 501, the driver drops its exchange; not a failed attempt.
    h.send(b"AUTH RCRAM-MD5 user@home.example\r\n");
    assert_eq!(h.codes(b"*\r\n"), ["501 5.0.0"]);
    assert_eq!(h.messenger.last(), Some(&MessengerRequest::RcramCancel));
    assert_eq!(h.auth_outcomes.len(), 1);
    // Syntax: one address.
    assert_eq!(h.codes(b"AUTH RCRAM-MD5\r\nAUTH RCRAM-MD5 nobody\r\n"), ["501 5.5.4", "501 5.5.4"]);
    assert_eq!(h.codes(b"MAIL FROM:<user@home.example>\r\n"), ["530 5.7.0"]);
    rcram_login(&mut h);
}

/// SPEC 8.2 step 7: a client has 30 s (not the command timeout) to answer a relayed
/// challenge; then the session closes, and the driver's link with it.
#[test]
fn a_relayed_challenge_is_answered_within_the_rcram_answer_timeout() {
    let mut h = messenger_harness();
    assert_eq!(h.session.read_timeout(), Duration::from_secs(300));
    h.send(b"AUTH RCRAM-MD5 user@home.example\r\n");
    assert_eq!(h.session.read_timeout(), Duration::from_secs(30));
    h.session.on_timeout();
    assert_eq!(h.codes(b""), ["421 4.4.2"]);
    assert!(h.session.is_closed());
    // The home server's side waits as for any command.
    let mut h = messenger_harness();
    h.send(b"AUTH X-RCRAM-VERIFY user@local.example v.example\r\n");
    assert_eq!(h.session.read_timeout(), Duration::from_secs(300));
}

#[test]
fn rcram_is_only_on_the_messenger_port() {
    let mut h = Harness::with(auth_config(Service::Submission));
    h.send(b"EHLO c\r\n");
    let codes = h.codes(b"AUTH RCRAM-MD5 user@home.example\r\nAUTH X-RCRAM-VERIFY a@b.example v.example\r\n");
    assert_eq!(codes.len(), 2);
    assert!(codes.iter().all(|c| c.starts_with('5')), "{codes:?}");
    assert!(h.messenger.is_empty());
}

#[test]
fn x_rcram_verify_issues_a_bound_challenge_and_grants_verification_only() {
    let mut h = messenger_harness();
    let out = h.send(b"AUTH X-RCRAM-VERIFY user@local.example verifier.example\r\n");
    assert_eq!(out, format!("334 {}\r\n", b64("<1.2.rcram.verifier.example@mx.local.example>")));
    let answer = format!("{}\r\n", b64("user@local.example good"));
    assert_eq!(h.codes(answer.as_bytes()), ["235 2.7.0"]);
    assert_eq!(
        h.messenger[1],
        MessengerRequest::VerifyAnswer {
            address: "user@local.example".into(),
            challenge: "<1.2.rcram.verifier.example@mx.local.example>".into(),
            response: b"user@local.example good".to_vec(),
        }
    );
    assert!(h.session.is_verified_only());
    assert_eq!(h.session.authenticated(), None);
    // Reported as a verifier's success: the driver remembers the verifier, logs in no one.
    assert_eq!(h.auth_outcomes, [(Some("user@local.example".to_string()), true, true)]);
    // SPEC 8.2: MAIL on this connection gets 503 5.7.0; no second AUTH.
    assert_eq!(h.codes(b"MAIL FROM:<user@local.example>\r\n"), ["503 5.7.0"]);
    assert_eq!(h.codes(b"AUTH PLAIN AHVzZXJAbG9jYWwuZXhhbXBsZQBwZW5jaWw=\r\n"), ["503 5.5.1"]);
    assert!(!h.send(b"EHLO c\r\n").contains("AUTH"));
}

#[test]
fn x_rcram_verify_refusals() {
    let mut h = messenger_harness();
    assert_eq!(h.codes(b"AUTH X-RCRAM-VERIFY user@local.example rogue.example\r\n"), ["535 5.7.0"]);
    assert_eq!(h.codes(b"AUTH X-RCRAM-VERIFY nobody@local.example v.example\r\n"), ["535 5.7.8"]);
    h.send(b"AUTH X-RCRAM-VERIFY user@local.example v.example\r\n");
    let wrong = format!("{}\r\n", b64("user@local.example bad"));
    assert_eq!(h.codes(wrong.as_bytes()), ["535 5.7.8"]);
    assert_eq!(h.auth_outcomes.len(), 3, "every refusal counts");
    // For the address only: the IP is the verifier's, which counts its clients itself.
    assert!(h.auth_outcomes.iter().all(|(_, success, via_verifier)| !success && *via_verifier));
    h.send(b"AUTH X-RCRAM-VERIFY user@local.example v.example\r\n");
    assert_eq!(h.codes(b"not base64!\r\n"), ["501 5.5.2"]);
    // SPEC 8.2 step 3: no answer is a cancel; the driver frees the challenge and counts it.
    let cancel = MessengerRequest::VerifyCancel {
        address: "user@local.example".into(),
        challenge: "<1.2.rcram.v.example@mx.local.example>".into(),
    };
    assert_eq!(h.messenger.last(), Some(&cancel));
    h.send(b"AUTH X-RCRAM-VERIFY user@local.example v.example\r\n");
    assert_eq!(h.codes(b"*\r\n"), ["501 5.0.0"]);
    assert_eq!(h.messenger.last(), Some(&cancel));
    // A cancel before any challenge was issued has nothing to free.
    let before = h.messenger.len();
    h.send(b"AUTH X-RCRAM-VERIFY nobody@local.example v.example\r\n");
    assert_eq!(h.messenger.len(), before + 1);
    assert_eq!(
        h.codes(b"AUTH X-RCRAM-VERIFY user@local.example\r\nAUTH X-RCRAM-VERIFY a b c\r\n"),
        ["501 5.5.4", "501 5.5.4"]
    );
    // A verifier names itself: an IP literal would pass any forward-DNS check (SPEC 8.2).
    assert_eq!(h.codes(b"AUTH X-RCRAM-VERIFY user@local.example 203.0.113.5\r\n"), ["501 5.5.4"]);
    assert_eq!(h.codes(b"MAIL FROM:<user@local.example>\r\n"), ["530 5.7.0"]);
}

#[test]
fn notify_receipt_and_track() {
    let mut h = messenger_harness();
    let record =
        "2026-12-01T10:00:00Z,<id@local.example>,glen@local.example,abc@remote.example,downloaded,mx.remote.example";
    // NOTIFY needs no authentication (the driver checks the caller's IP).
    assert_eq!(h.codes(format!("NOTIFY {record}\r\n").as_bytes()), ["250 2.0.0"]);
    let rogue = record.replace("glen@local.example", "glen@rogue.example");
    assert_eq!(h.codes(format!("NOTIFY {rogue}\r\n").as_bytes()), ["550 5.7.1"]);
    let remote = record.replace("glen@local.example", "glen@other.example");
    assert_eq!(h.codes(format!("NOTIFY {remote}\r\n").as_bytes()), ["550 5.1.1"]);
    assert_eq!(h.codes(b"NOTIFY\r\nNOTIFY a,b,c\r\n"), ["501 5.5.4", "501 5.5.4"]);
    assert_eq!(h.messenger.len(), 3, "a malformed record never reaches the driver");
    // RECEIPT and TRACK need a local user.
    assert_eq!(h.codes(b"RECEIPT <known@x.example> DECRYPTED\r\nTRACK\r\n"), ["530 5.7.0", "530 5.7.0"]);
    messenger_login(&mut h);
    assert_eq!(h.codes(b"RECEIPT <known@x.example> DECRYPTED\r\n"), ["250 2.0.0"]);
    assert_eq!(h.codes(b"RECEIPT <other@x.example> failed\r\n"), ["550 5.1.0"]);
    assert_eq!(h.codes(b"RECEIPT known@x.example DECRYPTED\r\nRECEIPT <a@b> MAYBE\r\n"), ["501 5.5.4", "501 5.5.4"]);
    assert_eq!(h.send(b"TRACK\r\n"), "250 0 records\r\n");
    assert_eq!(h.send(b"TRACK 2026-12-01T10:00:00Z\r\n"), "250 0 records\r\n");
    assert_eq!(h.messenger.last(), Some(&MessengerRequest::Track { since: Some(1_796_119_200) }));
    assert_eq!(h.codes(b"TRACK yesterday\r\n"), ["501 5.5.4"]);
}

#[test]
fn notify_needs_ehlo_first() {
    let mut h = Harness::with(auth_config(Service::Messenger));
    let record =
        "2026-12-01T10:00:00Z,<id@local.example>,glen@local.example,abc@remote.example,downloaded,mx.remote.example";
    assert_eq!(h.codes(format!("NOTIFY {record}\r\n").as_bytes()), ["503 5.5.1"]);
}

fn messenger_harness() -> Harness {
    let mut config = auth_config(Service::Messenger);
    config.allow_plaintext_passwords = true;
    let mut h = Harness::with(config);
    h.send(b"EHLO c\r\n");
    h
}

fn messenger_login(h: &mut Harness) {
    let login = format!("AUTH PLAIN {}\r\n", b64("\0user@local.example\0pencil"));
    assert_eq!(h.codes(login.as_bytes()), ["235 2.7.0"]);
}

#[test]
fn messenger_ehlo_offers_its_verbs_and_not_atrn_or_etrn() {
    let mut h = Harness::with(auth_config(Service::Messenger));
    let out = h.send(b"EHLO c\r\n");
    for keyword in ["250-CERT\r\n", "250-PUBCERT\r\n", "250-ENTITIES\r\n", "250 BOOK\r\n", "250-STARTTLS\r\n"] {
        assert!(out.contains(keyword), "{keyword} in {out}");
    }
    assert!(!out.contains("ETRN") && !out.contains("ATRN"), "{out}");
    assert_eq!(h.codes(b"ATRN\r\n"), ["502 5.5.1"]);
    assert_eq!(h.codes(b"ETRN example.org\r\n"), ["502 5.5.1"]);
}

#[test]
fn messenger_verbs_are_502_on_other_ports() {
    for service in [Service::Mx, Service::Submission] {
        let mut h = Harness::with(SessionConfig::new(service, "mx.local.example"));
        h.send(b"EHLO c\r\n");
        for verb in ["CERT a@local.example", "PUBCERT", "ENTITIES", "BOOK x"] {
            assert_eq!(h.codes(format!("{verb}\r\n").as_bytes()), ["502 5.5.1"], "{verb} on {service:?}");
        }
        assert!(h.messenger.is_empty());
    }
}

#[test]
fn messenger_mail_needs_authentication() {
    let mut h = messenger_harness();
    assert_eq!(h.codes(b"MAIL FROM:<user@local.example>\r\n"), ["530 5.7.0"]);
    messenger_login(&mut h);
    assert_eq!(h.codes(b"MAIL FROM:<user@local.example>\r\n"), ["250 2.1.0"]);
}

#[test]
fn cert_local_relayed_and_syntax() {
    let mut h = messenger_harness();
    let out = h.send(b"CERT user@local.example\r\n");
    assert!(out.starts_with("250-user@local.example\r\n250------BEGIN CERTIFICATE-----\r\n"), "{out}");
    assert!(out.ends_with("250 -----END CERTIFICATE-----\r\n"), "{out}");
    // A relayed reply is passed on octet for octet.
    assert_eq!(h.send(b"CERT abc@remote.example\r\n"), "550 5.1.1 No such address or published ID: x\r\n");
    assert_eq!(h.codes(b"CERT 1234567F\r\n"), ["550 5.1.1"]);
    assert_eq!(h.codes(b"CERT\r\nCERT a b\r\nCERT 12/3\r\n"), ["501 5.5.4", "501 5.5.4", "501 5.5.4"]);
    assert_eq!(h.messenger.len(), 3, "syntax errors never reach the driver");
}

#[test]
fn cert_needs_ehlo_first() {
    let mut h = Harness::with(auth_config(Service::Messenger));
    assert_eq!(h.codes(b"CERT user@local.example\r\n"), ["503 5.5.1"]);
    assert_eq!(h.codes(b"ENTITIES\r\n"), ["503 5.5.1"]);
}

#[test]
fn pubcert_needs_local_auth_and_reads_pem_lines() {
    let mut h = messenger_harness();
    assert_eq!(h.codes(b"PUBCERT\r\n"), ["530 5.7.0"]);
    messenger_login(&mut h);
    assert_eq!(h.codes(b"PUBCERT\r\n"), ["354 Send"]);
    // Pipelined with the command after it; the dot-stuffed line is unstuffed.
    let out = h.codes(b"-----BEGIN CERTIFICATE-----\r\n..QUJD\r\n-----END CERTIFICATE-----\r\n.\r\nNOOP\r\n");
    assert_eq!(out, ["250 2.0.0", "250 2.0.0"]);
    assert_eq!(
        h.messenger.last(),
        Some(&MessengerRequest::Pubcert {
            pem: "-----BEGIN CERTIFICATE-----\n.QUJD\n-----END CERTIFICATE-----\n".into()
        })
    );
    assert_eq!(h.codes(b"PUBCERT\r\nnot a certificate\r\n.\r\n"), ["354 Send", "554 5.7.0"]);
}

#[test]
fn pubcert_too_large_is_one_554_after_the_dot() {
    let mut h = messenger_harness();
    messenger_login(&mut h);
    h.send(b"PUBCERT\r\n");
    let long_line = format!("{}\r\n", "A".repeat(600));
    let mut upload = long_line.repeat(3);
    upload.push_str(".\r\n");
    assert_eq!(h.codes(upload.as_bytes()), ["554 5.7.0"]);
    let count = h.messenger.len();
    let mut big = "QUJD\r\n".repeat(super::MAX_PEM / 5 + 10);
    big.push_str(".\r\n");
    h.send(b"PUBCERT\r\n");
    assert_eq!(h.codes(big.as_bytes()), ["554 5.7.0"]);
    assert_eq!(h.messenger.len(), count, "a refused upload never reaches the driver");
}

#[test]
fn entities_for_anyone_book_only_when_authenticated() {
    let mut h = messenger_harness();
    assert_eq!(h.send(b"ENTITIES 7\r\n"), "250 7\r\n");
    assert_eq!(h.send(b"ENTITIES\r\n"), "250 0\r\n");
    assert_eq!(h.codes(b"ENTITIES x\r\n"), ["501 5.5.4"]);
    assert_eq!(h.codes(b"BOOK smith\r\n"), ["530 5.7.0"]);
    assert_eq!(h.codes(b"BOOK\r\n"), ["501 5.5.4"]);
    messenger_login(&mut h);
    assert_eq!(h.send(b"BOOK smith\r\n"), "250 0 entries\r\n");
    assert_eq!(h.messenger.last(), Some(&MessengerRequest::Book { query: "smith".into() }));
}

#[test]
fn relayed_errors_count_towards_max_errors() {
    let mut config = auth_config(Service::Messenger);
    config.max_errors = 2;
    let mut h = Harness::with(config);
    h.send(b"EHLO c\r\n");
    h.send(b"CERT a@remote.example\r\n");
    let out = h.send(b"CERT b@remote.example\r\n");
    assert!(out.ends_with("421 4.7.0 mx.local.example Too many errors, closing connection\r\n"), "{out}");
    assert!(h.session.is_closed());
}
