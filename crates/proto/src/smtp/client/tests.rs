use std::sync::Arc;

use super::*;
use crate::smtp::reply::EnhancedCode;

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
    let mut c = Client::new(config);
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
    let mut c = Client::new(config());
    step(&mut c, "220 old.example\r\n");
    let (out, _) = step(&mut c, "502 5.5.1 command not implemented\r\n");
    assert_eq!(out, "HELO client.example\r\n");
    let (_, events) = step(&mut c, "250 old.example\r\n");
    assert_eq!(events, [ClientEvent::Ready]);
    assert!(!c.capabilities().extended);
}

#[test]
fn greeting_554_fails() {
    let mut c = Client::new(config());
    let (out, events) = step(&mut c, "554 no SMTP service here\r\n");
    assert_eq!(out, "QUIT\r\n");
    assert!(matches!(&events[..], [ClientEvent::Failed(r)] if r.code == 554));
}

#[test]
fn starttls_then_ehlo_again() {
    let mut cfg = config();
    cfg.tls = TlsMode::Opportunistic;
    let mut c = Client::new(cfg);
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
    let mut c = Client::new(cfg.clone());
    step(&mut c, "220 mx\r\n");
    step(&mut c, "250-mx\r\n250 STARTTLS\r\n");
    let (_, events) = step(&mut c, "454 4.7.0 TLS not available\r\n");
    assert_eq!(events, [ClientEvent::Ready]);

    cfg.tls = TlsMode::Required;
    let mut c = Client::new(cfg.clone());
    step(&mut c, "220 mx\r\n");
    step(&mut c, "250-mx\r\n250 STARTTLS\r\n");
    let (_, events) = step(&mut c, "454 4.7.0 TLS not available\r\n");
    assert!(matches!(&events[..], [ClientEvent::Failed(r)] if r.code == 454));

    let mut c = Client::new(cfg);
    step(&mut c, "220 mx\r\n");
    let (_, events) = step(&mut c, "250 mx\r\n");
    assert!(matches!(&events[..], [ClientEvent::Failed(r)] if r.is_temporary()));
}

#[test]
fn starttls_response_injection_is_refused() {
    let mut cfg = config();
    cfg.tls = TlsMode::Opportunistic;
    let mut c = Client::new(cfg);
    step(&mut c, "220 mx\r\n");
    step(&mut c, "250-mx\r\n250 STARTTLS\r\n");
    let (_, events) = step(&mut c, "220 go ahead\r\n250 injected\r\n");
    assert!(matches!(&events[..], [ClientEvent::Failed(r)] if r.code == 421));
}

#[test]
fn auth_cram_md5_rfc2195_example() {
    let mut cfg = config();
    cfg.credentials = Some(Credentials::new("tim", "tanstaaftanstaaf"));
    let mut c = Client::new(cfg);
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
    let mut c = Client::new(cfg.clone());
    step(&mut c, "220 mx\r\n");
    let (out, _) = step(&mut c, "250-mx\r\n250 AUTH LOGIN PLAIN\r\n");
    // RFC 4616: \0tim\0pw
    assert_eq!(out, "AUTH PLAIN AHRpbQBwdw==\r\n");
    let (out, events) = step(&mut c, "535 5.7.8 Authentication credentials invalid\r\n");
    assert_eq!(out, "QUIT\r\n");
    assert!(matches!(&events[..], [ClientEvent::Failed(r)] if r.code == 535));

    // No AUTH offered at all: fail rather than relay unauthenticated.
    let mut c = Client::new(cfg);
    step(&mut c, "220 mx\r\n");
    let (_, events) = step(&mut c, "250 mx\r\n");
    assert!(matches!(&events[..], [ClientEvent::Failed(r)] if r.code == 454));
}

#[test]
fn auth_login_exchange() {
    let mut cfg = config();
    cfg.credentials = Some(Credentials::new("tim", "pw"));
    cfg.allow_cleartext_auth = true;
    let mut c = Client::new(cfg);
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
    let mut c = Client::new(config());
    let (_, events) = step(&mut c, "HTTP/1.1 400 Bad Request\r\n");
    assert!(matches!(&events[..], [ClientEvent::Failed(r)] if r.code == 421));
}

/// Found by the smtp_client fuzz target: a positive reply where none fits (here a 334
/// greeting) failed the session with that reply, which the delivery driver passes to every
/// queued message, and which reads as delivered.
#[test]
fn a_positive_reply_never_fails_the_session() {
    for greeting in ["334 UGFzc3dvcmQ6\r\n", "250 mx.example\r\n", "199 early\r\n"] {
        let mut c = Client::new(config());
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
    let mut c = Client::new(cfg);
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
