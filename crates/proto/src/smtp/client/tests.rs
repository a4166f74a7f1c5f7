use std::sync::Arc;

use super::*;
use crate::smtp::reply::EnhancedCode;

/// The random octets of the SCRAM client nonce at setup.
const NONCE: [u8; NONCE_RANDOM_LEN] = [0x5a; NONCE_RANDOM_LEN];

fn config() -> ClientConfig {
    let mut c = ClientConfig::new("client.example");
    c.tls = TlsMode::Never;
    c
}

/// Feeds server text; returns what the client wrote and the events it raised.
fn step(c: &mut Client, server: &str) -> (String, Vec<ClientEvent>) {
    c.feed(server.as_bytes());
    let mut events = Vec::new();
    while let Some(e) = c.poll_event() {
        events.push(e);
    }
    (String::from_utf8(c.take_output()).unwrap(), events)
}

fn message(rcpts: &[&str], body: &str) -> OutboundMessage {
    OutboundMessage {
        sender: "alice@client.example".into(),
        recipients: rcpts
            .iter()
            .map(|r| OutboundRecipient { address: r.to_string(), notify: None, orcpt: None })
            .collect(),
        data: Arc::new(body.as_bytes().to_vec()),
        ret: None,
        envid: None,
        auth: None,
        smtputf8: false,
    }
}

fn send(c: &mut Client, m: OutboundMessage) -> (String, Vec<ClientEvent>) {
    c.send_message(m);
    step(c, "")
}

fn done(events: &[ClientEvent]) -> &TransactionResult {
    events
        .iter()
        .find_map(|e| match e {
            ClientEvent::Done(r) => Some(r),
            _ => None,
        })
        .expect("a Done event")
}

/// Greeting and a plain EHLO with the given extension lines.
fn ready(config: ClientConfig, extensions: &[&str]) -> Client {
    let mut c = Client::new(config, NONCE);
    let (out, _) = step(&mut c, "220 mx.example ESMTP\r\n");
    assert_eq!(out, "EHLO client.example\r\n");
    let mut reply = String::from("250");
    if extensions.is_empty() {
        reply.push_str(" mx.example\r\n");
    } else {
        reply.push_str("-mx.example\r\n");
        for (i, e) in extensions.iter().enumerate() {
            let sep = if i + 1 == extensions.len() { ' ' } else { '-' };
            reply.push_str(&format!("250{sep}{e}\r\n"));
        }
    }
    let (out, events) = step(&mut c, &reply);
    assert_eq!(out, "");
    assert_eq!(events, [ClientEvent::Ready]);
    c
}

#[test]
fn rfc5321_d1_transaction_without_pipelining() {
    // RFC 5321 appendix D.1: one recipient refused, the message goes to the others.
    let mut c = ready(config(), &[]);
    let (out, _) = send(
        &mut c,
        message(&["Jones@foo.com", "Green@foo.com", "Brown@foo.com"], "Subject: hi\r\n\r\nBlah blah blah...\r\n"),
    );
    assert_eq!(out, "MAIL FROM:<alice@client.example>\r\n");
    let (out, _) = step(&mut c, "250 OK\r\n");
    assert_eq!(out, "RCPT TO:<Jones@foo.com>\r\n");
    let (out, _) = step(&mut c, "250 OK\r\n");
    assert_eq!(out, "RCPT TO:<Green@foo.com>\r\n");
    let (out, _) = step(&mut c, "550 No such user here\r\n");
    assert_eq!(out, "RCPT TO:<Brown@foo.com>\r\n");
    let (out, _) = step(&mut c, "250 OK\r\n");
    assert_eq!(out, "DATA\r\n");
    let (out, _) = step(&mut c, "354 Start mail input; end with <CRLF>.<CRLF>\r\n");
    assert_eq!(out, "Subject: hi\r\n\r\nBlah blah blah...\r\n.\r\n");
    let (out, events) = step(&mut c, "250 OK\r\n");
    assert_eq!(out, "");
    let result = done(&events);
    let codes: Vec<u16> = result.replies.iter().map(|r| r.code).collect();
    assert_eq!(codes, [250, 550, 250]);
    assert!(result.data_sent);
    assert!(c.is_ready());
    c.quit();
    assert_eq!(String::from_utf8(c.take_output()).unwrap(), "QUIT\r\n");
    let (_, events) = step(&mut c, "221 foo.com Service closing transmission channel\r\n");
    assert_eq!(events, [ClientEvent::Closed]);
}

#[test]
fn rfc2920_pipelined_transaction() {
    // RFC 2920 3.2 example: MAIL, RCPTs and DATA in one group.
    let mut c = ready(config(), &["PIPELINING", "8BITMIME"]);
    let (out, _) = send(&mut c, message(&["mrose@dbc.mtview.ca.us", "ned@innosoft.com"], "hi\r\n"));
    assert_eq!(
        out,
        "MAIL FROM:<alice@client.example>\r\nRCPT TO:<mrose@dbc.mtview.ca.us>\r\nRCPT TO:<ned@innosoft.com>\r\nDATA\r\n"
    );
    let (out, events) = step(&mut c, "250 sender ok\r\n250 recipient ok\r\n250 recipient ok\r\n354 enter mail\r\n");
    assert_eq!(out, "hi\r\n.\r\n");
    assert!(events.is_empty());
    let (_, events) = step(&mut c, "250 message sent\r\n");
    assert_eq!(done(&events).accepted(), 2);
}

#[test]
fn pipelined_all_refused_then_rset_before_reuse() {
    let mut c = ready(config(), &["PIPELINING"]);
    send(&mut c, message(&["a@x.example"], "x\r\n"));
    // A server that wrongly accepts DATA with no recipient: send only "." (RFC 2920 3.1).
    let (out, _) = step(&mut c, "250 ok\r\n550 5.1.1 no\r\n354 go\r\n");
    assert_eq!(out, ".\r\n");
    let (_, events) = step(&mut c, "554 5.5.1 no valid recipients\r\n");
    let r = done(&events);
    assert_eq!(r.replies[0].code, 550);
    assert_eq!(r.replies[0].enhanced, Some(EnhancedCode(5, 1, 1)));
    assert!(!r.data_sent);
    let (out, _) = send(&mut c, message(&["b@x.example"], "y\r\n"));
    assert!(out.starts_with("RSET\r\nMAIL FROM:"));
}

#[test]
fn no_data_when_every_recipient_is_refused() {
    let mut c = ready(config(), &[]);
    send(&mut c, message(&["a@x.example"], "x\r\n"));
    step(&mut c, "250 ok\r\n");
    let (out, events) = step(&mut c, "450 4.2.1 try later\r\n");
    assert_eq!(out, "");
    assert!(done(&events).replies[0].is_temporary());
    let (out, _) = send(&mut c, message(&["b@x.example"], "y\r\n"));
    assert_eq!(out, "RSET\r\n");
    let (out, _) = step(&mut c, "250 ok\r\n");
    assert_eq!(out, "MAIL FROM:<alice@client.example>\r\n");
}

#[test]
fn mail_refused_fails_every_recipient() {
    let mut c = ready(config(), &[]);
    send(&mut c, message(&["a@x.example", "b@x.example"], "x\r\n"));
    let (out, events) = step(&mut c, "553 5.7.1 sender refused\r\n");
    assert_eq!(out, "");
    let r = done(&events);
    assert!(r.replies.iter().all(|r| r.code == 553));
    // No RSET needed after a refused MAIL.
    let (out, _) = send(&mut c, message(&["a@x.example"], "x\r\n"));
    assert!(out.starts_with("MAIL FROM:"));
}

#[test]
fn helo_fallback_rfc5321_4_1_4() {
    let mut c = Client::new(config(), NONCE);
    step(&mut c, "220 old.example\r\n");
    let (out, _) = step(&mut c, "502 5.5.1 command not implemented\r\n");
    assert_eq!(out, "HELO client.example\r\n");
    let (_, events) = step(&mut c, "250 old.example\r\n");
    assert_eq!(events, [ClientEvent::Ready]);
    assert!(!c.capabilities().extended);
}

#[test]
fn greeting_554_fails() {
    let mut c = Client::new(config(), NONCE);
    let (out, events) = step(&mut c, "554 no SMTP service here\r\n");
    assert_eq!(out, "QUIT\r\n");
    assert!(matches!(&events[..], [ClientEvent::Failed(r)] if r.code == 554));
}

#[test]
fn starttls_then_ehlo_again() {
    let mut cfg = config();
    cfg.tls = TlsMode::Opportunistic;
    let mut c = Client::new(cfg, NONCE);
    step(&mut c, "220 mx\r\n");
    let (out, _) = step(&mut c, "250-mx\r\n250 STARTTLS\r\n");
    assert_eq!(out, "STARTTLS\r\n");
    let (_, events) = step(&mut c, "220 2.0.0 Ready to start TLS\r\n");
    assert_eq!(events, [ClientEvent::StartTls]);
    c.tls_started();
    let (out, _) = step(&mut c, "");
    assert_eq!(out, "EHLO client.example\r\n");
    let (_, events) = step(&mut c, "250-mx\r\n250 PIPELINING\r\n");
    assert_eq!(events, [ClientEvent::Ready]);
    assert!(c.is_tls() && c.capabilities().pipelining);
}

#[test]
fn starttls_refused_goes_on_in_the_clear_unless_required() {
    let mut cfg = config();
    cfg.tls = TlsMode::Opportunistic;
    let mut c = Client::new(cfg.clone(), NONCE);
    step(&mut c, "220 mx\r\n");
    step(&mut c, "250-mx\r\n250 STARTTLS\r\n");
    let (_, events) = step(&mut c, "454 4.7.0 TLS not available\r\n");
    assert_eq!(events, [ClientEvent::Ready]);

    cfg.tls = TlsMode::Required;
    let mut c = Client::new(cfg.clone(), NONCE);
    step(&mut c, "220 mx\r\n");
    step(&mut c, "250-mx\r\n250 STARTTLS\r\n");
    let (_, events) = step(&mut c, "454 4.7.0 TLS not available\r\n");
    assert!(matches!(&events[..], [ClientEvent::Failed(r)] if r.code == 454));

    let mut c = Client::new(cfg, NONCE);
    step(&mut c, "220 mx\r\n");
    let (_, events) = step(&mut c, "250 mx\r\n");
    assert!(matches!(&events[..], [ClientEvent::Failed(r)] if r.is_temporary()));
}

#[test]
fn starttls_response_injection_is_refused() {
    let mut cfg = config();
    cfg.tls = TlsMode::Opportunistic;
    let mut c = Client::new(cfg, NONCE);
    step(&mut c, "220 mx\r\n");
    step(&mut c, "250-mx\r\n250 STARTTLS\r\n");
    let (_, events) = step(&mut c, "220 go ahead\r\n250 injected\r\n");
    assert!(matches!(&events[..], [ClientEvent::Failed(r)] if r.code == 421));
}

#[test]
fn auth_cram_md5_rfc2195_example() {
    let mut cfg = config();
    cfg.credentials = Some(Credentials::new("tim", "tanstaaftanstaaf"));
    let mut c = Client::new(cfg, NONCE);
    step(&mut c, "220 mx\r\n");
    let (out, _) = step(&mut c, "250-mx\r\n250 AUTH PLAIN CRAM-MD5\r\n");
    // PLAIN is not used in the clear; CRAM-MD5 is.
    assert_eq!(out, "AUTH CRAM-MD5\r\n");
    let (out, _) = step(&mut c, "334 PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+\r\n");
    assert_eq!(out, "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw\r\n", "RFC 2195 2 example response");
    let (_, events) = step(&mut c, "235 2.7.0 Authentication successful\r\n");
    assert_eq!(events, [ClientEvent::Ready]);
    assert!(c.is_authenticated());
}

#[test]
fn auth_plain_when_allowed_and_failure_reported() {
    let mut cfg = config();
    cfg.credentials = Some(Credentials::new("tim", "pw"));
    cfg.allow_cleartext_auth = true;
    let mut c = Client::new(cfg.clone(), NONCE);
    step(&mut c, "220 mx\r\n");
    let (out, _) = step(&mut c, "250-mx\r\n250 AUTH LOGIN PLAIN\r\n");
    // RFC 4616: \0tim\0pw
    assert_eq!(out, "AUTH PLAIN AHRpbQBwdw==\r\n");
    let (out, events) = step(&mut c, "535 5.7.8 Authentication credentials invalid\r\n");
    assert_eq!(out, "QUIT\r\n");
    assert!(matches!(&events[..], [ClientEvent::Failed(r)] if r.code == 535));

    // No AUTH offered at all: fail rather than relay unauthenticated.
    let mut c = Client::new(cfg, NONCE);
    step(&mut c, "220 mx\r\n");
    let (_, events) = step(&mut c, "250 mx\r\n");
    assert!(matches!(&events[..], [ClientEvent::Failed(r)] if r.code == 454));
}

#[test]
fn auth_login_exchange() {
    let mut cfg = config();
    cfg.credentials = Some(Credentials::new("tim", "pw"));
    cfg.allow_cleartext_auth = true;
    let mut c = Client::new(cfg, NONCE);
    step(&mut c, "220 mx\r\n");
    let (out, _) = step(&mut c, "250-mx\r\n250 AUTH LOGIN\r\n");
    assert_eq!(out, "AUTH LOGIN\r\n");
    let (out, _) = step(&mut c, "334 VXNlcm5hbWU6\r\n");
    assert_eq!(out, "dGlt\r\n");
    let (out, _) = step(&mut c, "334 UGFzc3dvcmQ6\r\n");
    assert_eq!(out, "cHc=\r\n");
    let (_, events) = step(&mut c, "235 ok\r\n");
    assert_eq!(events, [ClientEvent::Ready]);
}

#[test]
fn mail_parameters_follow_the_extensions() {
    let mut c = ready(config(), &["PIPELINING", "SIZE 1000", "DSN", "AUTH CRAM-MD5", "8BITMIME"]);
    let mut m = message(&["bob@x.example"], "caf\u{e9}\r\n");
    m.ret = Some(DsnReturn::Headers);
    m.envid = Some("QQ+1".into());
    m.auth = Some("e=mc2@example.com".into());
    m.recipients[0].notify = Some("SUCCESS,FAILURE".into());
    m.recipients[0].orcpt = Some("rfc822;bob+x@x.example".into());
    let (out, _) = send(&mut c, m);
    assert_eq!(
        out,
        "MAIL FROM:<alice@client.example> SIZE=7 BODY=8BITMIME RET=HDRS ENVID=QQ+2B1 AUTH=e+3Dmc2@example.com\r\n\
         RCPT TO:<bob@x.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+2Bx@x.example\r\nDATA\r\n"
    );

    // Unauthenticated mail says AUTH=<> (SPEC 3); without DSN no DSN parameters.
    let mut c = ready(config(), &["AUTH PLAIN"]);
    let mut m = message(&["bob@x.example"], "x\r\n");
    m.recipients[0].notify = Some("NEVER".into());
    let (out, _) = send(&mut c, m);
    assert_eq!(out, "MAIL FROM:<alice@client.example> AUTH=<>\r\n");
    let (out, _) = step(&mut c, "250 ok\r\n");
    assert_eq!(out, "RCPT TO:<bob@x.example>\r\n");
}

#[test]
fn refusals_before_sending() {
    // RFC 6152: 8-bit data to a server without 8BITMIME.
    let mut c = ready(config(), &["PIPELINING"]);
    let (out, events) = send(&mut c, message(&["a@x.example"], "caf\u{e9}\r\n"));
    assert_eq!(out, "");
    assert_eq!(done(&events).replies[0].enhanced, Some(EnhancedCode(5, 6, 3)));
    assert!(c.is_ready());
    // RFC 1870: bigger than the announced SIZE.
    let mut c = ready(config(), &["SIZE 3"]);
    let (_, events) = send(&mut c, message(&["a@x.example"], "four\r\n"));
    assert_eq!(done(&events).replies[0].code, 552);
    // RFC 6531: a UTF-8 address to a server without SMTPUTF8.
    let mut c = ready(config(), &["8BITMIME"]);
    let (_, events) = send(&mut c, message(&["j\u{f6}rg@x.example"], "x\r\n"));
    assert_eq!(done(&events).replies[0].enhanced, Some(EnhancedCode(5, 6, 7)));
    // ... and with it, the SMTPUTF8 parameter.
    let mut c = ready(config(), &["8BITMIME", "SMTPUTF8"]);
    let (out, _) = send(&mut c, message(&["j\u{f6}rg@x.example"], "x\r\n"));
    assert_eq!(out, "MAIL FROM:<alice@client.example> SMTPUTF8\r\n");
}

#[test]
fn data_is_dot_stuffed() {
    let mut c = ready(config(), &["PIPELINING"]);
    send(&mut c, message(&["a@x.example"], ".hidden\r\n..two\r\nlast"));
    let (out, _) = step(&mut c, "250 ok\r\n250 ok\r\n354 go\r\n");
    assert_eq!(out, "..hidden\r\n...two\r\nlast\r\n.\r\n");
}

#[test]
fn connection_lost_after_data_is_temporary() {
    let mut c = ready(config(), &["PIPELINING"]);
    send(&mut c, message(&["a@x.example", "b@x.example"], "x\r\n"));
    step(&mut c, "250 ok\r\n250 ok\r\n550 5.1.1 unknown\r\n354 go\r\n");
    c.on_closed();
    let mut events = Vec::new();
    while let Some(e) = c.poll_event() {
        events.push(e);
    }
    let r = done(&events);
    assert_eq!(r.replies[0].code, 421);
    assert_eq!(r.replies[1].code, 550);
    assert!(r.data_sent);
    assert!(matches!(events.last(), Some(ClientEvent::Failed(_))));
    assert!(c.is_closed());
}

#[test]
fn timeouts_follow_rfc5321_4_5_3_2() {
    let mut c = ready(config(), &["PIPELINING"]);
    assert_eq!(c.timeout(), None);
    send(&mut c, message(&["a@x.example"], "x\r\n"));
    assert_eq!(c.timeout(), Some(Duration::from_secs(300)));
    step(&mut c, "250 ok\r\n250 ok\r\n");
    assert_eq!(c.timeout(), Some(Duration::from_secs(120)));
    step(&mut c, "354 go\r\n");
    assert_eq!(c.timeout(), Some(Duration::from_secs(600)));
}

#[test]
fn garbage_reply_fails_the_session() {
    let mut c = Client::new(config(), NONCE);
    let (_, events) = step(&mut c, "HTTP/1.1 400 Bad Request\r\n");
    assert!(matches!(&events[..], [ClientEvent::Failed(r)] if r.code == 421));
}

/// Found by the smtp_client fuzz target: a positive reply where none fits (here a 334
/// greeting) failed the session with that reply, which the delivery driver passes to every
/// queued message, and which reads as delivered.
#[test]
fn a_positive_reply_never_fails_the_session() {
    for greeting in ["334 UGFzc3dvcmQ6\r\n", "250 mx.example\r\n", "199 early\r\n"] {
        let mut c = Client::new(config(), NONCE);
        let (out, events) = step(&mut c, greeting);
        assert_eq!(out, "QUIT\r\n");
        assert!(
            matches!(&events[..], [ClientEvent::Failed(r)] if (r.code, r.enhanced) == (451, Some(EnhancedCode(4, 5, 0))))
        );
        assert!(c.is_closed());
    }
    // A 250 to AUTH, during setup.
    let mut cfg = config();
    cfg.credentials = Some(Credentials::new("tim", "pw"));
    cfg.allow_cleartext_auth = true;
    let mut c = Client::new(cfg, NONCE);
    step(&mut c, "220 mx.example\r\n");
    let (out, _) = step(&mut c, "250-mx.example\r\n250 AUTH PLAIN\r\n");
    assert!(out.starts_with("AUTH PLAIN "));
    let (_, events) = step(&mut c, "250 fine\r\n");
    assert!(matches!(&events[..], [ClientEvent::Failed(r)] if r.code == 451));
    // A 3xx to RSET ends the session, and the open transaction with it.
    let mut c = ready(config(), &["PIPELINING"]);
    send(&mut c, message(&["a@x.example"], "x\r\n"));
    step(&mut c, "250 ok\r\n550 no\r\n554 no valid recipients\r\n");
    let (out, _) = send(&mut c, message(&["a@x.example"], "x\r\n"));
    assert!(out.starts_with("RSET\r\n"));
    let (_, events) = step(&mut c, "354 what\r\n");
    assert_eq!(done(&events).replies[0].code, 451);
    assert!(matches!(events.last(), Some(ClientEvent::Failed(r)) if r.code == 451));
}

/// Found by the smtp_client fuzz target: a recipient counted as delivered although the data
/// never went out (DATA answered 250 or 220 instead of 354), or although the final "." was
/// answered with something other than 2xx.
#[test]
fn only_a_2xx_to_the_data_is_a_delivery() {
    let mut c = ready(config(), &["PIPELINING"]);
    send(&mut c, message(&["a@x.example"], "x\r\n"));
    let (out, events) = step(&mut c, "250 ok\r\n250 ok\r\n250 what data?\r\n");
    assert_eq!(out, "");
    let r = done(&events);
    assert!(!r.data_sent);
    assert_eq!(r.accepted(), 0);
    assert_eq!(r.replies[0].code, 451);
    for dot_reply in ["354 again\r\n", "199 soon\r\n"] {
        let mut c = ready(config(), &["PIPELINING"]);
        send(&mut c, message(&["a@x.example"], "x\r\n"));
        step(&mut c, "250 ok\r\n250 ok\r\n354 go\r\n");
        let (_, events) = step(&mut c, dot_reply);
        let r = done(&events);
        assert!(r.data_sent);
        assert_eq!(r.accepted(), 0, "{dot_reply}");
        assert_eq!(r.replies[0].code, 451);
    }
}

// ---- any command, block, AUTH on demand, exchanges, hand-over ----

fn reply_of(events: &[ClientEvent]) -> &ServerReply {
    events
        .iter()
        .find_map(|e| match e {
            ClientEvent::Reply(r) => Some(r),
            _ => None,
        })
        .expect("a Reply event")
}

#[test]
fn a_command_reply_split_across_feeds_comes_whole_with_its_octets() {
    let mut c = ready(config(), &["CERT"]);
    c.command("CERT a@home.test").unwrap();
    assert!(!c.is_ready());
    assert_eq!(c.timeout(), Some(Duration::from_secs(300)));
    let (out, events) = step(&mut c, "");
    assert_eq!(out, "CERT a@home.test\r\n");
    assert!(events.is_empty());
    let wire = "250-a@home.test\r\n250------BEGIN CERTIFICATE-----\r\n250-QUJD\r\n250 -----END CERTIFICATE-----\r\n";
    let (first, rest) = wire.split_at(21);
    let (_, events) = step(&mut c, first);
    assert!(events.is_empty(), "half a reply is no event");
    let (rest_a, rest_b) = rest.split_at(30);
    assert!(step(&mut c, rest_a).1.is_empty());
    let (_, events) = step(&mut c, rest_b);
    assert_eq!(events.len(), 1);
    let reply = reply_of(&events);
    assert_eq!((reply.code, reply.wire.as_slice()), (250, wire.as_bytes()));
    assert_eq!(reply.texts()[1], "-----BEGIN CERTIFICATE-----");
    assert!(c.is_ready());
    // Ready again: the next command goes out.
    c.command("NOOP").unwrap();
    assert_eq!(step(&mut c, "250 2.0.0 ok\r\n").0, "NOOP\r\n");
}

#[test]
fn a_command_with_cr_or_lf_is_refused_and_never_sent() {
    let mut c = ready(config(), &[]);
    for line in ["CERT a@x.test\r\nQUIT", "CERT a\nRSET", "CERT a\rRSET", "NOOP\r\n"] {
        assert_eq!(c.command(line), Err(CommandError::LineBreak), "{line:?}");
    }
    assert_eq!(c.take_output(), b"");
    assert!(c.is_ready());
    // Not while setting up, nor while a reply is awaited.
    let mut fresh = Client::new(config(), NONCE);
    assert_eq!(fresh.command("NOOP"), Err(CommandError::NotReady));
    c.command("NOOP").unwrap();
    assert_eq!(c.command("NOOP"), Err(CommandError::NotReady));
    assert_eq!(c.take_output(), b"NOOP\r\n");
}

#[test]
fn reply_limits_are_per_command_and_a_too_large_reply_is_refused() {
    let mut cfg = config();
    cfg.reply_limits = ReplyLimits::new(5, 10_000);
    let mut c = ready(cfg, &["ENTITIES"]);
    let big: String =
        (0..100).map(|i| format!("250-{i} ADD 1234567F a{i}@x.test\r\n")).collect::<String>() + "250 100\r\n";
    // ENTITIES may be large (SPEC 8.4)...
    c.command_with_limits("ENTITIES 0", ReplyLimits::new(20_000, 4 << 20)).unwrap();
    let (_, events) = step(&mut c, &big);
    assert_eq!(reply_of(&events).lines.len(), 101);
    // ... the next reply is held to the configured limits again: refused, session over.
    c.command("CERT a@x.test").unwrap();
    let (_, events) = step(&mut c, &big);
    assert!(matches!(&events[..], [ClientEvent::Failed(r)] if r.code == 421), "{events:?}");
    assert!(c.is_closed());
    // So is one over the byte limit.
    let mut cfg = config();
    cfg.reply_limits = ReplyLimits::new(100, 64);
    let mut c = ready(cfg, &[]);
    c.command("BOOK x").unwrap();
    let (_, events) = step(&mut c, &format!("250 {}\r\n", "x".repeat(100)));
    assert!(matches!(&events[..], [ClientEvent::Failed(r)] if r.code == 421));
}

#[test]
fn strict_replies_refuse_what_could_not_be_relayed() {
    let mut cfg = config();
    cfg.strict_replies = true;
    let mut c = ready(cfg, &[]);
    c.command("CERT a@x.test").unwrap();
    let (_, events) = step(&mut c, "250-a@x.test\n250 x\r\n");
    assert!(matches!(&events[..], [ClientEvent::Failed(r)] if r.code == 421));
}

#[test]
fn a_block_goes_dot_stuffed_after_354_only() {
    let mut c = ready(config(), &[]);
    assert_eq!(c.send_block(b"x"), Err(CommandError::NoGoAhead));
    c.command("PUBCERT").unwrap();
    let (out, events) = step(&mut c, "354 go ahead\r\n");
    assert_eq!(out, "PUBCERT\r\n");
    assert_eq!(reply_of(&events).code, 354);
    // RFC 5321 4.5.2: a leading "." doubled, every line end CRLF, then ".".
    c.send_block(b"-----BEGIN\n.x\r\nlast").unwrap();
    assert_eq!(c.timeout(), Some(Duration::from_secs(600)));
    let (out, events) = step(&mut c, "250 2.0.0 stored\r\n");
    assert_eq!(out, "-----BEGIN\r\n..x\r\nlast\r\n.\r\n");
    assert_eq!(reply_of(&events).code, 250);
    // The go-ahead is used up, and a 250 is none.
    assert_eq!(c.send_block(b"x"), Err(CommandError::NoGoAhead));
    c.command("NOOP").unwrap();
    step(&mut c, "250 ok\r\n");
    assert_eq!(c.send_block(b"x"), Err(CommandError::NoGoAhead));
}

#[test]
fn after_atrn_the_unread_input_is_handed_back() {
    // RFC 2645 4: after 250 to ATRN the roles reverse; what the provider already sent
    // belongs to the reversed session, exactly as it came.
    let mut c = ready(config(), &["ATRN"]);
    c.command("ATRN a.example,b.example").unwrap();
    let (out, events) = step(&mut c, "250 OK now reversing the connection\r\nEHLO prov");
    assert_eq!(out, "ATRN a.example,b.example\r\n");
    assert_eq!(events.len(), 1);
    assert_eq!(reply_of(&events).code, 250);
    let (_, events) = step(&mut c, "ider.example\r\n");
    assert!(events.is_empty(), "nothing awaited: nothing read");
    assert_eq!(c.release(), b"EHLO provider.example\r\n");
    assert!(c.is_closed());
    c.quit();
    c.feed(b"more");
    assert_eq!(c.take_output(), b"", "no QUIT: the connection is not ours any more");
    assert_eq!(c.release(), b"");

    // Bytes beyond a reply are read as the next command's reply otherwise.
    let mut c = ready(config(), &[]);
    c.command("NOOP").unwrap();
    step(&mut c, "250 one\r\n250 two\r\n");
    assert_eq!(c.take_unread_input(), b"250 two\r\n");
    c.command("NOOP").unwrap();
    let (_, events) = step(&mut c, "250 three\r\n");
    assert_eq!(reply_of(&events).lines, ["three"]);
}

#[test]
fn auth_on_demand_cram_md5_rfc2195_success() {
    let mut c = ready(config(), &["AUTH CRAM-MD5"]);
    c.authenticate(ClientSession::new(Mechanism::CramMd5, Credentials::new("tim", "tanstaaftanstaaf"))).unwrap();
    let (out, _) = step(&mut c, "");
    assert_eq!(out, "AUTH CRAM-MD5\r\n");
    let (out, _) = step(&mut c, "334 PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+\r\n");
    assert_eq!(out, "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw\r\n", "RFC 2195 2 example response");
    let (_, events) = step(&mut c, "235 2.7.0 Authentication successful\r\n");
    assert_eq!(events, [ClientEvent::Auth(AuthOutcome::Success)]);
    assert!(c.is_ready() && c.is_authenticated());
}

#[test]
fn auth_on_demand_535_is_an_outcome_not_the_end() {
    let mut c = ready(config(), &["AUTH PLAIN"]);
    c.authenticate(ClientSession::new(Mechanism::Plain, Credentials::new("tim", "pw"))).unwrap();
    let (out, events) = step(&mut c, "535 5.7.8 Authentication credentials invalid\r\n");
    assert_eq!(out, "AUTH PLAIN AHRpbQBwdw==\r\n");
    let [ClientEvent::Auth(AuthOutcome::Refused(reply))] = &events[..] else { panic!("{events:?}") };
    assert_eq!((reply.code, reply.enhanced), (535, Some(EnhancedCode(5, 7, 8))));
    assert_eq!(reply.wire, b"535 5.7.8 Authentication credentials invalid\r\n");
    assert!(c.is_ready() && !c.is_authenticated());
    // EXTERNAL with a client certificate (RFC 4422 A): an empty initial response is "=".
    c.authenticate(ClientSession::new(Mechanism::External, Credentials::default())).unwrap();
    let (out, events) = step(&mut c, "235 2.7.0 ok\r\n");
    assert_eq!(out, "AUTH EXTERNAL =\r\n");
    assert_eq!(events, [ClientEvent::Auth(AuthOutcome::Success)]);
}

#[test]
fn auth_on_demand_cancels_what_it_cannot_answer_and_refuses_to_start_without_a_nonce() {
    let mut c = ready(config(), &["AUTH SCRAM-SHA-256"]);
    let scram = ClientSession::new(Mechanism::ScramSha256, Credentials::new("user", "pencil"));
    assert_eq!(c.authenticate(scram), Err(CommandError::Sasl(SaslError::Temporary)));
    assert_eq!(c.take_output(), b"");
    let scram =
        ClientSession::new(Mechanism::ScramSha256, Credentials::new("user", "pencil")).with_random_nonce(&NONCE);
    c.authenticate(scram).unwrap();
    let (out, _) = step(&mut c, "");
    assert!(out.starts_with("AUTH SCRAM-SHA-256 "));
    // Not a server-first-message: RFC 4954 4 "*", then the server's 501.
    let (out, events) = step(&mut c, "334 bm9uc2Vuc2U=\r\n");
    assert_eq!(out, "*\r\n");
    assert!(events.is_empty());
    let (_, events) = step(&mut c, "501 5.0.0 cancelled\r\n");
    assert!(matches!(&events[..], [ClientEvent::Auth(AuthOutcome::Failed(r))] if r.code == 454), "{events:?}");
    assert!(c.is_ready());
}

/// An exchange that sends a line and is done at the server's `250`.
struct Ping {
    out: Vec<u8>,
    seen: Vec<u8>,
    closed: bool,
}

impl Exchange for Ping {
    fn feed(&mut self, bytes: &[u8]) {
        self.seen.extend_from_slice(bytes);
    }
    fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
    fn is_done(&self) -> bool {
        self.seen.ends_with(b"250 pong\r\n")
    }
    fn on_closed(&mut self) {
        self.closed = true;
    }
}

#[test]
fn an_exchange_runs_over_the_session_then_it_is_ready_again() {
    let mut c = ready(config(), &[]);
    // Read before the exchange began (nothing awaited): the exchange's.
    c.feed(b"220 ");
    let mut ping = Ping { out: b"PING\r\n".to_vec(), seen: Vec::new(), closed: false };
    c.pump(&mut ping).unwrap();
    assert_eq!(c.take_output(), b"PING\r\n");
    assert_eq!(c.command("NOOP"), Err(CommandError::NotReady));
    assert_eq!(c.timeout(), Some(Duration::from_secs(300)));
    c.feed(b"250 po");
    c.pump(&mut ping).unwrap();
    assert!(!c.is_ready());
    c.feed(b"ng\r\n");
    c.pump(&mut ping).unwrap();
    assert_eq!(ping.seen, b"220 250 pong\r\n");
    assert!(c.is_ready());
    assert!(c.poll_event().is_none());
    // The connection lost in the middle: the exchange hears of it.
    let mut ping = Ping { out: Vec::new(), seen: Vec::new(), closed: false };
    c.pump(&mut ping).unwrap();
    c.on_closed();
    assert!(matches!(c.poll_event(), Some(ClientEvent::Failed(r)) if r.code == 421));
    assert_eq!(c.pump(&mut ping), Err(CommandError::NotReady));
    assert!(ping.closed);
}

#[test]
fn rcram_md5_runs_as_an_exchange() {
    use crate::messenger::rcram::{RcramClient, RcramEvent, RcramOutcome};
    let mut c = ready(config(), &["AUTH RCRAM-MD5"]);
    assert!(c.capabilities().offers_auth("RCRAM-MD5"));
    let mut rcram = RcramClient::new("a@home.test", "pw", "mx.verifier.test", 1_700_000_000);
    rcram.start();
    c.pump(&mut rcram).unwrap();
    assert_eq!(c.take_output(), b"AUTH RCRAM-MD5 a@home.test\r\n");
    c.feed(b"535 5.7.8 Authentication credentials invalid\r\n");
    c.pump(&mut rcram).unwrap();
    assert!(c.is_ready());
    assert!(matches!(rcram.poll_event(), Some(RcramEvent::Done(RcramOutcome::Refused(r))) if r.code == 535));
}

#[test]
fn required_tls_never_falls_back_to_plaintext() {
    let mut cfg = config();
    cfg.tls = TlsMode::Required;
    cfg.credentials = Some(Credentials::new("tim", "pw"));
    cfg.allow_cleartext_auth = true;
    // Not offered: no AUTH, no Ready, only QUIT.
    let mut c = Client::new(cfg.clone(), NONCE);
    step(&mut c, "220 mx\r\n");
    let (out, events) = step(&mut c, "250-mx\r\n250 AUTH PLAIN\r\n");
    assert_eq!(out, "QUIT\r\n");
    assert!(matches!(&events[..], [ClientEvent::Failed(r)] if r.code == 454));
    assert_eq!(c.command("NOOP"), Err(CommandError::NotReady));
    // Refused: the same.
    let mut c = Client::new(cfg, NONCE);
    step(&mut c, "220 mx\r\n");
    let (out, _) = step(&mut c, "250-mx\r\n250-AUTH PLAIN\r\n250 STARTTLS\r\n");
    assert_eq!(out, "STARTTLS\r\n");
    let (out, events) = step(&mut c, "454 4.7.0 TLS not available due to temporary reason\r\n");
    assert_eq!(out, "QUIT\r\n");
    assert!(matches!(&events[..], [ClientEvent::Failed(r)] if r.code == 454));
    assert!(c.is_closed());
}

#[test]
fn tls_when_offered_goes_on_in_the_clear_only_without_the_offer() {
    let mut cfg = config();
    cfg.tls = TlsMode::WhenOffered;
    // Not offered: in the clear.
    let mut c = Client::new(cfg.clone(), NONCE);
    step(&mut c, "220 mx\r\n");
    let (out, events) = step(&mut c, "250-mx\r\n250 CERT\r\n");
    assert_eq!(out, "");
    assert_eq!(events, vec![ClientEvent::Ready]);
    assert!(!c.is_tls());
    // Offered: STARTTLS, and a refusal ends the session.
    let mut c = Client::new(cfg.clone(), NONCE);
    step(&mut c, "220 mx\r\n");
    let (out, _) = step(&mut c, "250-mx\r\n250 STARTTLS\r\n");
    assert_eq!(out, "STARTTLS\r\n");
    let (out, events) = step(&mut c, "454 4.7.0 TLS not available due to temporary reason\r\n");
    assert_eq!(out, "QUIT\r\n");
    assert!(matches!(&events[..], [ClientEvent::Failed(r)] if r.code == 454 && r.from_peer));
    assert!(c.is_closed());
    // Offered and taken: EHLO again inside TLS.
    let mut c = Client::new(cfg, NONCE);
    step(&mut c, "220 mx\r\n");
    step(&mut c, "250-mx\r\n250 STARTTLS\r\n");
    let (_, events) = step(&mut c, "220 2.0.0 Go ahead\r\n");
    assert_eq!(events, vec![ClientEvent::StartTls]);
    c.tls_started();
    assert_eq!(c.take_output(), b"EHLO client.example\r\n");
    let (_, events) = step(&mut c, "250-mx\r\n250 CERT\r\n");
    assert_eq!(events, vec![ClientEvent::Ready]);
    assert!(c.is_tls());
}

#[test]
fn scram_at_setup_uses_the_nonce_given() {
    let mut cfg = config();
    cfg.credentials = Some(Credentials::new("user", "pencil"));
    let mut c = Client::new(cfg, NONCE);
    step(&mut c, "220 mx\r\n");
    let (out, _) = step(&mut c, "250-mx\r\n250 AUTH SCRAM-SHA-256 CRAM-MD5\r\n");
    let expected = sasl::encode_initial_response(
        format!("n,,n=user,r={}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, NONCE)).as_bytes(),
    );
    assert_eq!(out, format!("AUTH SCRAM-SHA-256 {expected}\r\n"));
}
