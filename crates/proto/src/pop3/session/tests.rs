//! Unit tests of the POP3 session: the RFC 1939 examples for every command, and every
//! `-ERR` the session sends.

use std::sync::Arc;

use super::*;
use crate::pop3::reply::RespCode;
use crate::sasl::{ClientSession, Credentials, Mechanism, Secrets};

/// `mrose` / `tanstaaf`, derived once (Argon2id is slow in debug builds).
fn mrose_secrets() -> &'static Secrets {
    static SECRETS: std::sync::OnceLock<Secrets> = std::sync::OnceLock::new();
    SECRETS.get_or_init(|| Secrets::from_password("tanstaaf", &[3; crate::sasl::SALTS_LEN]).unwrap())
}

/// A message of exactly `size` octets whose body starts with `first_line`.
fn message(subject: &str, first_line: &str, size: usize) -> Vec<u8> {
    let mut m = format!("Subject: {subject}\r\n\r\n{first_line}\r\n").into_bytes();
    while m.len() + 7 <= size {
        m.extend_from_slice(b"line.\r\n");
    }
    while m.len() + 2 < size {
        m.push(b'x');
    }
    m.extend_from_slice(b"\r\n");
    m.truncate(size);
    m
}

struct Harness {
    session: Session,
    /// The maildrop: unique-id and message.
    maildrop: Vec<(String, Vec<u8>)>,
    /// Another session holds the maildrop.
    locked: bool,
    open_error: Option<Reply>,
    fetch_error: Option<Reply>,
    update_error: Option<Reply>,
    block_auth: bool,
    opened: Vec<String>,
    fetched: Vec<(usize, Option<u32>)>,
    downloads: Vec<usize>,
    updates: Vec<Vec<usize>>,
    auth_outcomes: Vec<(Option<String>, bool)>,
    tls_starts: usize,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(|_| {})
    }

    /// STLS offered, every mechanism configured.
    fn with(adjust: impl FnOnce(&mut SessionConfig)) -> Harness {
        let mut config = SessionConfig::new("mx.local.example");
        config.starttls = true;
        config.auth_mechanisms = Mechanism::ALL.to_vec();
        adjust(&mut config);
        let mut h = Harness {
            session: Session::new(Arc::new(config), crate::sasl::Fresh::new(1_700_000_000, [5; crate::sasl::SEED_LEN])),
            maildrop: vec![
                ("uid-one".into(), message("one", "first", 120)),
                ("uid-two".into(), message("two", ".starts with a dot", 200)),
            ],
            locked: false,
            open_error: None,
            fetch_error: None,
            update_error: None,
            block_auth: false,
            opened: Vec::new(),
            fetched: Vec::new(),
            downloads: Vec::new(),
            updates: Vec::new(),
            auth_outcomes: Vec::new(),
            tls_starts: 0,
        };
        assert_eq!(h.output(), "+OK mx.local.example POP3 server (vouchmail) ready\r\n");
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
                Event::StartTls => {
                    self.tls_starts += 1;
                    self.session.tls_started(TlsInfo {
                        version: "TLSv1.3".into(),
                        cipher: "TLS13_AES_128_GCM_SHA256".into(),
                        channel_binding: Some(vec![7; 32]),
                        external_identity: Some("mrose".into()),
                    });
                }
                Event::LookupSecrets { authcid } => {
                    if self.block_auth {
                        self.session.auth_blocked();
                    } else {
                        let secrets = (authcid == "mrose").then(mrose_secrets);
                        next = self.session.provide_secrets(secrets);
                        continue;
                    }
                }
                Event::AuthFinished { authcid, success } => self.auth_outcomes.push((authcid, success)),
                Event::OpenMailbox { user } => {
                    self.opened.push(user);
                    let result = if self.locked {
                        Err(Reply::in_use())
                    } else if let Some(e) = self.open_error.clone() {
                        Err(e)
                    } else {
                        Ok(self
                            .maildrop
                            .iter()
                            .map(|(uid, m)| MessageInfo { uid: uid.clone(), size: m.len() as u64 })
                            .collect())
                    };
                    self.session.mailbox_opened(result);
                }
                Event::Fetch { number, top } => {
                    self.fetched.push((number, top));
                    let result = match self.fetch_error.clone() {
                        Some(e) => Err(e),
                        None => Ok(self.maildrop[number - 1].1.clone()),
                    };
                    self.session.message_loaded(result);
                }
                Event::Downloaded { number } => self.downloads.push(number),
                Event::Update { deleted } => {
                    self.updates.push(deleted);
                    self.session.update_done(self.update_error.clone().map_or(Ok(()), Err));
                }
            }
            next = self.session.poll_event();
        }
    }

    fn output(&mut self) -> String {
        String::from_utf8(self.session.take_output()).unwrap()
    }

    /// A session inside TLS.
    fn tls() -> Harness {
        let mut h = Harness::new();
        assert_eq!(h.send(b"STLS\r\n"), "+OK Begin TLS negotiation\r\n");
        h
    }

    /// A session in TRANSACTION with the two-message maildrop.
    fn logged_in() -> Harness {
        let mut h = Harness::tls();
        h.send(b"USER mrose\r\n");
        assert_eq!(h.send(b"PASS tanstaaf\r\n"), "+OK mrose's maildrop has 2 messages (320 octets)\r\n");
        h
    }
}

/// What a SASL client would answer, run against the session until a status line.
fn sasl_exchange(h: &mut Harness, mechanism: Mechanism, credentials: Credentials) -> String {
    let mut client = ClientSession::new(mechanism, credentials).with_random_nonce(&[4; crate::sasl::NONCE_RANDOM_LEN]);
    if mechanism == Mechanism::ScramSha256Plus {
        client = client.with_channel_binding(vec![7; 32]);
    }
    let command = match client.initial_response().unwrap() {
        Some(ir) => format!("AUTH {} {}\r\n", mechanism.name(), sasl::encode_initial_response(&ir)),
        None => format!("AUTH {}\r\n", mechanism.name()),
    };
    let mut out = h.send(command.as_bytes());
    while let Some(challenge) = out.strip_prefix("+ ") {
        let challenge = sasl::decode_challenge(challenge.trim_end().as_bytes()).unwrap();
        let response = match client.step(&challenge) {
            Ok(r) => r,
            Err(_) => return h.send(b"*\r\n"),
        };
        out = h.send(format!("{}\r\n", sasl::encode_response(&response)).as_bytes());
    }
    out
}

use crate::sasl;

#[test]
fn greeting_has_no_apop_timestamp() {
    let h = Harness::new();
    assert!(!h.session.is_tls());
    assert!(h.session.user().is_none());
}

#[test]
fn capa_on_a_clear_channel() {
    let mut h = Harness::new();
    assert_eq!(
        h.send(b"CAPA\r\n"),
        "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n\
         SASL SCRAM-SHA-256 CRAM-MD5\r\nSTLS\r\nIMPLEMENTATION vouchmail\r\n.\r\n"
    );
}

#[test]
fn capa_inside_tls_offers_user_and_every_mechanism_but_not_stls() {
    let mut h = Harness::tls();
    let out = h.send(b"CAPA\r\n");
    assert!(out.contains("\r\nUSER\r\n"), "{out}");
    assert!(out.contains("\r\nSASL SCRAM-SHA-256-PLUS SCRAM-SHA-256 EXTERNAL CRAM-MD5 PLAIN LOGIN\r\n"), "{out}");
    assert!(!out.contains("STLS"), "{out}");
}

#[test]
fn capa_is_the_same_in_transaction() {
    let mut h = Harness::tls();
    let before = h.send(b"CAPA\r\n");
    h.send(b"USER mrose\r\nPASS tanstaaf\r\n");
    assert_eq!(h.send(b"CAPA\r\n"), before);
}

#[test]
fn capa_with_plaintext_allowed_and_without_auth_or_tls() {
    let mut h = Harness::with(|c| {
        c.allow_plaintext_passwords = true;
        c.starttls = false;
        c.auth_mechanisms.clear();
    });
    let out = h.send(b"CAPA\r\n");
    assert!(out.contains("\r\nUSER\r\n"), "{out}");
    assert!(!out.contains("SASL") && !out.contains("STLS"), "{out}");
}

#[test]
fn user_and_pass_are_refused_on_a_clear_channel() {
    let mut h = Harness::new();
    let refused = "-ERR [AUTH] Plaintext authentication disallowed on non-secure connections; use STLS\r\n";
    assert_eq!(h.send(b"USER mrose\r\n"), refused);
    assert_eq!(h.send(b"PASS tanstaaf\r\n"), refused);
    assert!(h.opened.is_empty() && h.auth_outcomes.is_empty());
}

#[test]
fn user_and_pass_on_a_clear_channel_when_allowed() {
    let mut h = Harness::with(|c| c.allow_plaintext_passwords = true);
    // RFC 1939 7 example.
    assert_eq!(h.send(b"USER mrose\r\n"), "+OK Send PASS\r\n");
    assert_eq!(h.send(b"PASS tanstaaf\r\n"), "+OK mrose's maildrop has 2 messages (320 octets)\r\n");
    assert_eq!(h.opened, ["mrose"]);
    assert_eq!(h.auth_outcomes, [(Some("mrose".to_string()), true)]);
    assert_eq!(h.session.user(), Some("mrose"));
    assert!(h.session.in_transaction());
}

#[test]
fn wrong_password_and_unknown_user() {
    let mut h = Harness::tls();
    h.send(b"USER mrose\r\n");
    assert_eq!(h.send(b"PASS wrong\r\n"), "-ERR [AUTH] Authentication failed\r\n");
    // RFC 1939 7: after a failed PASS the client starts again with USER.
    assert_eq!(h.send(b"PASS tanstaaf\r\n"), "-ERR Send USER first\r\n");
    h.send(b"USER nobody\r\n");
    assert_eq!(h.send(b"PASS tanstaaf\r\n"), "-ERR [AUTH] Authentication failed\r\n");
    assert_eq!(h.auth_outcomes, [(Some("mrose".to_string()), false), (Some("nobody".to_string()), false)]);
    h.send(b"USER mrose\r\n");
    assert!(h.send(b"PASS tanstaaf\r\n").starts_with("+OK"));
}

#[test]
fn pass_with_spaces_and_user_syntax() {
    let mut h = Harness::tls();
    assert_eq!(h.send(b"USER\r\n"), "-ERR USER needs exactly one argument\r\n");
    assert_eq!(h.send(b"USER a b\r\n"), "-ERR USER needs exactly one argument\r\n");
    h.send(b"USER mrose\r\n");
    // The whole rest of the line is the password.
    assert_eq!(h.send(b"PASS tans taaf\r\n"), "-ERR [AUTH] Authentication failed\r\n");
}

#[test]
fn blocked_authentication_is_temporary() {
    let mut h = Harness::tls();
    h.block_auth = true;
    h.send(b"USER mrose\r\n");
    assert_eq!(h.send(b"PASS tanstaaf\r\n"), "-ERR [SYS/TEMP] Temporary authentication failure, try again later\r\n");
    assert!(h.opened.is_empty());
}

#[test]
fn rfc1939_transaction_example() {
    let mut h = Harness::logged_in();
    assert_eq!(h.send(b"STAT\r\n"), "+OK 2 320\r\n");
    assert_eq!(h.send(b"LIST\r\n"), "+OK 2 messages (320 octets)\r\n1 120\r\n2 200\r\n.\r\n");
    assert_eq!(h.send(b"LIST 2\r\n"), "+OK 2 200\r\n");
    assert_eq!(h.send(b"LIST 3\r\n"), "-ERR No such message\r\n");
    let retr = h.send(b"RETR 1\r\n");
    assert!(retr.starts_with("+OK 120 octets\r\nSubject: one\r\n\r\nfirst\r\nline.\r\n"), "{retr}");
    assert!(retr.ends_with("\r\n.\r\n"));
    assert_eq!(h.send(b"DELE 1\r\n"), "+OK Message 1 deleted\r\n");
    assert_eq!(h.send(b"STAT\r\n"), "+OK 1 200\r\n");
    assert_eq!(h.send(b"LIST\r\n"), "+OK 1 messages (200 octets)\r\n2 200\r\n.\r\n");
    assert_eq!(h.send(b"NOOP\r\n"), "+OK\r\n");
    assert_eq!(h.send(b"QUIT\r\n"), "+OK mx.local.example POP3 server signing off (1 message left)\r\n");
    assert_eq!(h.updates, [vec![1]]);
    assert!(h.session.is_closed());
}

#[test]
fn deleted_messages_are_out_of_reach_until_rset() {
    let mut h = Harness::logged_in();
    h.send(b"DELE 1\r\n");
    assert_eq!(h.send(b"DELE 1\r\n"), "-ERR Message 1 already deleted\r\n");
    assert_eq!(h.send(b"RETR 1\r\n"), "-ERR Message 1 already deleted\r\n");
    assert_eq!(h.send(b"TOP 1 0\r\n"), "-ERR Message 1 already deleted\r\n");
    assert_eq!(h.send(b"LIST 1\r\n"), "-ERR Message 1 already deleted\r\n");
    assert_eq!(h.send(b"UIDL 1\r\n"), "-ERR Message 1 already deleted\r\n");
    assert_eq!(h.send(b"UIDL\r\n"), "+OK Unique-id listing follows\r\n2 uid-two\r\n.\r\n");
    // RFC 1939 5 RSET example.
    assert_eq!(h.send(b"RSET\r\n"), "+OK Maildrop has 2 messages (320 octets)\r\n");
    assert_eq!(h.send(b"QUIT\r\n"), "+OK mx.local.example POP3 server signing off (2 messages left)\r\n");
    assert_eq!(h.updates, [Vec::<usize>::new()]);
}

#[test]
fn deleting_everything_empties_the_maildrop() {
    let mut h = Harness::logged_in();
    h.send(b"DELE 1\r\nDELE 2\r\n");
    assert_eq!(h.send(b"STAT\r\n"), "+OK 0 0\r\n");
    assert_eq!(h.send(b"QUIT\r\n"), "+OK mx.local.example POP3 server signing off (maildrop empty)\r\n");
    assert_eq!(h.updates, [vec![1, 2]]);
}

#[test]
fn uidl_listing_and_single() {
    // RFC 1939 7 UIDL examples.
    let mut h = Harness::logged_in();
    assert_eq!(h.send(b"UIDL\r\n"), "+OK Unique-id listing follows\r\n1 uid-one\r\n2 uid-two\r\n.\r\n");
    assert_eq!(h.send(b"UIDL 2\r\n"), "+OK 2 uid-two\r\n");
    assert_eq!(h.send(b"UIDL 3\r\n"), "-ERR No such message\r\n");
    assert_eq!(h.session.uid(1), Some("uid-one"));
}

#[test]
fn retr_byte_stuffs_and_records_download_once() {
    let mut h = Harness::logged_in();
    let out = h.send(b"RETR 2\r\n");
    assert!(out.starts_with("+OK 200 octets\r\nSubject: two\r\n\r\n..starts with a dot\r\nline.\r\n"), "{out}");
    h.send(b"RETR 2\r\n");
    h.send(b"RETR 1\r\n");
    assert_eq!(h.downloads, [2, 1]);
    assert_eq!(h.fetched, [(2, None), (2, None), (1, None)]);
}

#[test]
fn top_sends_header_and_lines_without_downloading() {
    let mut h = Harness::logged_in();
    assert_eq!(h.send(b"TOP 1 0\r\n"), "+OK Top of message follows\r\nSubject: one\r\n\r\n.\r\n");
    assert_eq!(
        h.send(b"TOP 2 1\r\n"),
        "+OK Top of message follows\r\nSubject: two\r\n\r\n..starts with a dot\r\n.\r\n"
    );
    assert_eq!(h.send(b"TOP 3 1\r\n"), "-ERR No such message\r\n");
    assert_eq!(h.send(b"TOP 1\r\n"), "-ERR TOP needs a message number and a line count\r\n");
    assert!(h.downloads.is_empty());
    assert_eq!(h.fetched, [(1, Some(0)), (2, Some(1))]);
}

#[test]
fn message_numbers_must_be_numbers() {
    let mut h = Harness::logged_in();
    assert_eq!(h.send(b"RETR x\r\n"), "-ERR Invalid message number\r\n");
    assert_eq!(h.send(b"DELE 0\r\n"), "-ERR No such message\r\n");
    assert_eq!(h.send(b"RETR 4294967296\r\n"), "-ERR No such message\r\n");
    assert_eq!(h.send(b"RETR\r\n"), "-ERR A message number is needed\r\n");
    assert_eq!(h.send(b"LIST 1 2\r\n"), "-ERR Too many arguments\r\n");
    assert_eq!(h.send(b"STAT 1\r\n"), "-ERR This command takes no arguments\r\n");
}

#[test]
fn unknown_commands_and_apop() {
    let mut h = Harness::new();
    assert_eq!(h.send(b"XTND XMIT\r\n"), "-ERR Unknown command\r\n");
    assert_eq!(h.send(b"\r\n"), "-ERR Unknown command\r\n");
    assert_eq!(h.send(b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n"), "-ERR APOP is not available\r\n");
}

#[test]
fn transaction_commands_need_a_login() {
    let mut h = Harness::new();
    for cmd in ["STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 1", "UIDL"] {
        assert_eq!(h.send(format!("{cmd}\r\n").as_bytes()), "-ERR Command not valid in this state\r\n", "{cmd}");
    }
}

#[test]
fn authorization_commands_are_refused_in_transaction() {
    let mut h = Harness::logged_in();
    for cmd in ["USER mrose", "PASS x", "AUTH PLAIN", "AUTH", "APOP a b", "STLS"] {
        assert_eq!(h.send(format!("{cmd}\r\n").as_bytes()), "-ERR Command not valid in this state\r\n", "{cmd}");
    }
}

#[test]
fn quit_in_authorization_enters_no_update() {
    let mut h = Harness::new();
    assert_eq!(h.send(b"QUIT\r\n"), "+OK mx.local.example POP3 server signing off\r\n");
    assert!(h.session.is_closed());
    assert!(h.updates.is_empty());
    // Nothing more is read after the end.
    assert_eq!(h.send(b"NOOP\r\n"), "");
}

#[test]
fn maildrop_in_use() {
    let mut h = Harness::tls();
    h.locked = true;
    h.send(b"USER mrose\r\n");
    assert_eq!(h.send(b"PASS tanstaaf\r\n"), "-ERR [IN-USE] Mailbox is locked by another POP3 session\r\n");
    assert!(!h.session.in_transaction());
    assert_eq!(h.send(b"STAT\r\n"), "-ERR Command not valid in this state\r\n");
    // The client may try again (RFC 1939 7).
    h.locked = false;
    h.send(b"USER mrose\r\n");
    assert!(h.send(b"PASS tanstaaf\r\n").starts_with("+OK"));
}

#[test]
fn store_failures_are_sys_temp() {
    let mut h = Harness::tls();
    h.open_error = Some(Reply::sys_temp("Mailbox unavailable"));
    h.send(b"USER mrose\r\n");
    assert_eq!(h.send(b"PASS tanstaaf\r\n"), "-ERR [SYS/TEMP] Mailbox unavailable\r\n");

    let mut h = Harness::logged_in();
    h.fetch_error = Some(Reply::sys_temp("Message unavailable"));
    assert_eq!(h.send(b"RETR 1\r\n"), "-ERR [SYS/TEMP] Message unavailable\r\n");
    assert!(h.downloads.is_empty());
    assert_eq!(h.send(b"NOOP\r\n"), "+OK\r\n");

    let mut h = Harness::logged_in();
    h.update_error = Some(Reply::update_failed());
    h.send(b"DELE 1\r\n");
    assert_eq!(h.send(b"QUIT\r\n"), "-ERR [SYS/TEMP] Some deleted messages not removed\r\n");
    assert!(h.session.is_closed());
}

#[test]
fn sasl_scram_sha_256_on_a_clear_channel() {
    let mut h = Harness::new();
    let out = sasl_exchange(&mut h, Mechanism::ScramSha256, Credentials::new("mrose", "tanstaaf"));
    assert_eq!(out, "+OK mrose's maildrop has 2 messages (320 octets)\r\n");
    assert_eq!(h.auth_outcomes, [(Some("mrose".to_string()), true)]);
}

#[test]
fn sasl_cram_md5_on_a_clear_channel() {
    let mut h = Harness::new();
    assert!(sasl_exchange(&mut h, Mechanism::CramMd5, Credentials::new("mrose", "tanstaaf")).starts_with("+OK"));
    let mut h = Harness::new();
    let out = sasl_exchange(&mut h, Mechanism::CramMd5, Credentials::new("mrose", "wrong"));
    assert_eq!(out, "-ERR [AUTH] Authentication failed\r\n");
}

#[test]
fn every_mechanism_inside_tls() {
    for mechanism in Mechanism::ALL {
        let mut h = Harness::tls();
        let out = sasl_exchange(&mut h, mechanism, Credentials::new("mrose", "tanstaaf"));
        assert_eq!(out, "+OK mrose's maildrop has 2 messages (320 octets)\r\n", "{mechanism}");
        assert_eq!(h.opened, ["mrose"], "{mechanism}");
    }
    // Acting as another identity is refused, with every mechanism that can ask for it.
    for mechanism in [Mechanism::Plain, Mechanism::ScramSha256, Mechanism::ScramSha256Plus, Mechanism::External] {
        let mut h = Harness::tls();
        let out = sasl_exchange(&mut h, mechanism, Credentials::new("mrose", "tanstaaf").with_authzid("root"));
        assert_eq!(out, "-ERR [AUTH] Authentication failed\r\n", "{mechanism}");
        assert!(h.opened.is_empty());
    }
}

#[test]
fn plain_needs_tls() {
    let mut h = Harness::new();
    let out = sasl_exchange(&mut h, Mechanism::Plain, Credentials::new("mrose", "tanstaaf"));
    assert_eq!(out, "-ERR [AUTH] Plaintext authentication disallowed on non-secure connections; use STLS\r\n");
    assert_eq!(h.send(b"AUTH EXTERNAL =\r\n"), "-ERR Unrecognized authentication mechanism\r\n");
}

#[test]
fn auth_error_paths() {
    let mut h = Harness::tls();
    assert_eq!(h.send(b"AUTH X-UNKNOWN\r\n"), "-ERR Unrecognized authentication mechanism\r\n");
    assert_eq!(h.send(b"AUTH PLAIN !!!\r\n"), "-ERR Cannot decode the authentication response\r\n");
    assert_eq!(h.send(b"AUTH CRAM-MD5 =\r\n"), "-ERR Initial response not allowed for this mechanism\r\n");
    // RFC 5034 4: "=" is an empty initial response; PLAIN cannot be empty.
    assert_eq!(h.send(b"AUTH PLAIN =\r\n"), "-ERR Cannot decode the authentication response\r\n");
    // A client-first mechanism without an initial response gets an empty challenge.
    assert_eq!(h.send(b"AUTH PLAIN\r\n"), "+ \r\n");
    assert_eq!(h.send(b"*\r\n"), "-ERR Authentication cancelled\r\n");
    assert_eq!(h.send(b"AUTH PLAIN\r\n"), "+ \r\n");
    assert_eq!(h.send(b"not base64!\r\n"), "-ERR Cannot decode the authentication response\r\n");
    assert_eq!(h.send(b"AUTH PLAIN a b c\r\n"), "-ERR AUTH takes a mechanism and an optional initial response\r\n");
    // Cancels and syntax slips are not counted as password guesses.
    assert!(h.auth_outcomes.is_empty());
    let ir = sasl::encode_initial_response(b"\0mrose\0tanstaaf");
    assert!(h.send(format!("AUTH PLAIN {ir}\r\n").as_bytes()).starts_with("+OK"));
}

#[test]
fn auth_without_mechanism_lists_them() {
    let mut h = Harness::new();
    assert_eq!(h.send(b"AUTH\r\n"), "+OK Supported SASL mechanisms follow\r\nSCRAM-SHA-256\r\nCRAM-MD5\r\n.\r\n");
}

#[test]
fn auth_is_off_without_mechanisms() {
    let mut h = Harness::with(|c| c.auth_mechanisms.clear());
    assert_eq!(h.send(b"AUTH SCRAM-SHA-256\r\n"), "-ERR Unrecognized authentication mechanism\r\n");
}

#[test]
fn stls_discards_pipelined_input_and_resets() {
    let mut h = Harness::with(|c| c.allow_plaintext_passwords = true);
    assert_eq!(h.send(b"USER mrose\r\n"), "+OK Send PASS\r\n");
    // Everything after STLS in the same write is dropped, never executed.
    assert_eq!(h.send(b"STLS\r\nPASS tanstaaf\r\nQUIT\r\n"), "+OK Begin TLS negotiation\r\n");
    assert!(h.session.is_tls() && !h.session.is_closed());
    assert!(h.auth_outcomes.is_empty());
    // The USER from before TLS is forgotten.
    assert_eq!(h.send(b"PASS tanstaaf\r\n"), "-ERR Send USER first\r\n");
    assert_eq!(h.send(b"STLS\r\n"), "-ERR Command not permitted when TLS active\r\n");
    assert_eq!(h.tls_starts, 1);
}

#[test]
fn stls_when_not_offered() {
    let mut h = Harness::with(|c| c.starttls = false);
    assert_eq!(h.send(b"STLS\r\n"), "-ERR STLS is not available\r\n");
}

#[test]
fn pipelined_session_in_one_write() {
    let mut h = Harness::tls();
    let out = h.send(b"USER mrose\r\nPASS tanstaaf\r\nSTAT\r\nUIDL 1\r\nDELE 2\r\nQUIT\r\n");
    assert_eq!(
        out,
        "+OK Send PASS\r\n+OK mrose's maildrop has 2 messages (320 octets)\r\n+OK 2 320\r\n+OK 1 uid-one\r\n\
         +OK Message 2 deleted\r\n+OK mx.local.example POP3 server signing off (1 message left)\r\n"
    );
    assert_eq!(h.updates, [vec![2]]);
}

#[test]
fn split_input_at_every_byte() {
    let mut h = Harness::tls();
    let mut out = String::new();
    for byte in b"USER mrose\r\nPASS tanstaaf\r\nSTAT\r\nQUIT\r\n" {
        out.push_str(&h.send(&[*byte]));
    }
    assert!(out.contains("+OK 2 320\r\n"), "{out}");
    assert!(h.session.is_closed());
}

#[test]
fn bare_lf_ends_a_command_too() {
    let mut h = Harness::logged_in();
    assert_eq!(h.send(b"STAT\n"), "+OK 2 320\r\n");
}

#[test]
fn over_long_lines_are_refused_and_the_session_goes_on() {
    let mut h = Harness::logged_in();
    let long = format!("LIST {}\r\n", "1".repeat(250));
    assert_eq!(h.send(long.as_bytes()), "-ERR Line too long\r\n");
    // 255 octets with CRLF is still a command (RFC 2449 4).
    let longest = format!("NOOP{}\r\n", " ".repeat(249));
    assert_eq!(longest.len(), 255);
    assert_eq!(h.send(longest.as_bytes()), "+OK\r\n");
    // A line longer than any buffer is skipped up to its end.
    assert_eq!(h.send(&vec![b'x'; 20_000]), "");
    assert_eq!(h.send(b"xx\r\nSTAT\r\n"), "-ERR Line too long\r\n+OK 2 320\r\n");
}

#[test]
fn auth_lines_may_be_longer_than_commands() {
    let mut h = Harness::tls();
    assert_eq!(h.send(b"AUTH PLAIN\r\n"), "+ \r\n");
    let padding = "a".repeat(400);
    let response = sasl::encode_response(format!("\0mrose\0tanstaaf{padding}").as_bytes());
    assert_eq!(h.send(format!("{response}\r\n").as_bytes()), "-ERR [AUTH] Authentication failed\r\n");
    assert_eq!(h.send(b"AUTH PLAIN\r\n"), "+ \r\n");
    let huge = "A".repeat(MAX_AUTH_LINE);
    assert_eq!(h.send(format!("{huge}\r\n").as_bytes()), "-ERR Authentication line too long\r\n");
}

#[test]
fn too_many_errors_close_the_session() {
    let mut h = Harness::with(|c| c.max_errors = 3);
    h.send(b"BAD1\r\nBAD2\r\n");
    assert!(!h.session.is_closed());
    assert_eq!(h.send(b"BAD3\r\nNOOP\r\n"), "-ERR Unknown command\r\n");
    assert!(h.session.is_closed());
}

#[test]
fn timeout_closes_silently_and_deletes_nothing() {
    let mut h = Harness::logged_in();
    h.send(b"DELE 1\r\n");
    h.session.on_timeout();
    assert!(h.session.is_closed());
    assert_eq!(h.output(), "");
    h.run();
    assert!(h.updates.is_empty());
    assert_eq!(h.session.read_timeout(), std::time::Duration::from_secs(600));
}

#[test]
fn shutdown_says_so_and_deletes_nothing() {
    let mut h = Harness::logged_in();
    h.send(b"DELE 1\r\n");
    assert!(h.session.is_idle());
    h.session.on_shutdown();
    assert_eq!(h.output(), "-ERR [SYS/TEMP] Server shutting down\r\n");
    assert!(h.session.is_closed() && h.updates.is_empty());
}

#[test]
fn events_wait_for_the_driver() {
    let mut h = Harness::tls();
    h.session.feed(b"USER mrose\r\nPASS tanstaaf\r\nSTAT\r\n");
    assert_eq!(h.session.poll_event(), Some(Event::LookupSecrets { authcid: "mrose".into() }));
    assert!(h.session.is_awaiting_driver());
    // Nothing more happens until the driver answers.
    assert_eq!(h.session.poll_event(), None);
    assert_eq!(
        h.session.provide_secrets(Some(mrose_secrets())),
        Some(Event::AuthFinished { authcid: Some("mrose".into()), success: true })
    );
    assert_eq!(h.session.poll_event(), Some(Event::OpenMailbox { user: "mrose".into() }));
    h.session.mailbox_opened(Err(Reply::err_code(RespCode::InUse, "busy")));
    assert_eq!(h.session.poll_event(), None);
    assert_eq!(h.output(), "+OK Send PASS\r\n-ERR [IN-USE] busy\r\n-ERR Command not valid in this state\r\n");
}

#[test]
fn pipelined_retrs_wait_for_the_output_to_be_written() {
    let mut h = Harness::logged_in();
    h.maildrop[0].1 = vec![b'a'; MAX_BUFFERED_OUTPUT];
    h.session.feed(b"RETR 1\r\nRETR 2\r\nNOOP\r\n");
    h.run();
    assert_eq!(h.fetched, [(1, None)]);
    assert!(h.session.has_buffered_command());
    let first = h.output();
    assert!(first.len() > MAX_BUFFERED_OUTPUT && first.ends_with("\r\n.\r\n"));
    h.run();
    assert!(!h.session.has_buffered_command());
    assert!(h.output().ends_with("\r\n.\r\n+OK\r\n"));
    assert_eq!(h.fetched, [(1, None), (2, None)]);
}
