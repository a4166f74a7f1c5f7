//! The outbound SMTP client state machine against an arbitrary (hostile) server, driven the
//! way the delivery driver drives it: never panics, every transaction is reported with one
//! reply per recipient, a recipient counts as delivered only when the message data went
//! out and the server answered it with 2xx, every command line it writes ends in CRLF,
//! the output stays proportional to what the server sent, and the session always ends
//! closed.
#![no_main]

#[path = "shared/script.rs"]
mod script;

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vouchmail_proto::sasl::Credentials;
use vouchmail_proto::smtp::client::{
    Client, ClientConfig, ClientEvent, OutboundMessage, OutboundRecipient, TlsMode, TransactionResult,
};
use vouchmail_proto::smtp::command::DsnReturn;

/// Canned server replies (see `expand`): the fuzzer gets past the greeting and EHLO
/// quickly, then mixes in raw bytes.
const REPLIES: &[&str] = &[
    "220 mx.fuzz.test ESMTP\r\n",
    "250-mx.fuzz.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n\
     250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250 AUTH PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256\r\n",
    "250-mx.fuzz.test\r\n250-SIZE\r\n250 AUTH LOGIN\r\n",
    "250 mx.fuzz.test\r\n",
    "250 2.0.0 Ok\r\n",
    "250 2.1.5 Ok\r\n",
    "354 End data with <CR><LF>.<CR><LF>\r\n",
    "220 2.0.0 Ready to start TLS\r\n",
    "334 \r\n",
    "334 VXNlcm5hbWU6\r\n",
    "334 UGFzc3dvcmQ6\r\n",
    "334 PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+\r\n",
    "235 2.7.0 Authentication successful\r\n",
    "550 5.1.1 No such user\r\n",
    "451 4.3.0 Try again later\r\n",
    "552 5.3.4 Too big\r\n",
    "500 5.5.1 What?\r\n",
    "502 5.5.1 Not implemented\r\n",
    "421 4.3.2 Shutting down\r\n",
    "221 2.0.0 Bye\r\n",
    "535 5.7.8 Authentication failed\r\n",
];

fn config(knobs: u8) -> ClientConfig {
    let mut c = ClientConfig::new("client.fuzz.test");
    c.tls = match knobs & 3 {
        0 => TlsMode::Never,
        1 => TlsMode::Opportunistic,
        _ => TlsMode::Required,
    };
    c.credentials = match (knobs >> 2) & 3 {
        0 => None,
        1 => Some(Credentials::new("tim", "tanstaaftanstaaf")),
        2 => Some(Credentials::new("tim", "pw").with_authzid("tom")),
        _ => Some(Credentials::new("", "")),
    };
    c.allow_cleartext_auth = knobs & 16 != 0;
    c
}

fn message(knobs: u8, n: usize) -> OutboundMessage {
    let rcpts = 1 + usize::from(knobs & 3);
    let utf8 = knobs & 4 != 0;
    let eight_bit = knobs & 8 != 0;
    let dsn = knobs & 16 != 0;
    let mut data = format!("Subject: message {n}\r\n\r\n.leading dot\r\nbody\r\n").into_bytes();
    if eight_bit {
        data.extend_from_slice("8-bit: é\r\n".as_bytes());
    }
    OutboundMessage {
        sender: if knobs & 32 != 0 { String::new() } else { "alice@client.fuzz.test".into() },
        recipients: (0..rcpts)
            .map(|i| OutboundRecipient {
                address: if utf8 && i == 0 { "élise@fuzz.test".into() } else { format!("r{i}@fuzz.test") },
                notify: dsn.then(|| "SUCCESS,FAILURE".into()),
                orcpt: dsn.then(|| format!("rfc822;r{i}@fuzz.test")),
            })
            .collect(),
        data: Arc::new(data),
        ret: dsn.then_some(DsnReturn::Headers),
        envid: dsn.then(|| "id+1=".into()),
        auth: (knobs & 64 != 0).then(|| "alice@client.fuzz.test".into()),
        smtputf8: utf8,
    }
}

fn check_done(result: &TransactionResult, message: &OutboundMessage) {
    assert_eq!(result.replies.len(), message.recipients.len());
    assert!(result.accepted() <= result.replies.len());
    for reply in &result.replies {
        assert!((100..600).contains(&reply.code), "code {}", reply.code);
        if reply.is_positive() {
            // What the queue takes as delivered: the data went out and the server took it.
            assert!(result.data_sent, "recipient accepted without the data being sent: {reply}");
            assert_eq!(reply.code / 100, 2, "recipient accepted with a non-2xx reply: {reply}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (config_knobs, message_knobs, split, script) = (data[0], data[1], data[2], &data[4..]);
    let messages = usize::from(data[3] & 3);
    let end_by_timeout = data[3] & 4 != 0;
    let input = script::expand(script, REPLIES, b"");
    let step = usize::from(split) + 1;

    let mut client = Client::new(config(config_knobs), [0x5a; vouchmail_proto::sasl::NONCE_RANDOM_LEN]);
    let mut output = client.take_output();
    assert!(output.is_empty(), "the server speaks first");
    let mut sent: Vec<OutboundMessage> = Vec::new();
    let mut done = 0;
    let mut ended = false;
    let mut chunks = input.chunks(step);
    loop {
        let mut rounds = 0;
        while let Some(event) = client.poll_event() {
            rounds += 1;
            assert!(rounds < 1000, "the client does not make progress");
            assert!(!ended, "event after the session ended: {event:?}");
            match event {
                // A Failed may already be queued behind it: then the client is closed.
                ClientEvent::Ready => next_step(&mut client, &mut sent, messages, message_knobs),
                ClientEvent::StartTls => {
                    assert!(!client.is_tls());
                    client.tls_started();
                    assert!(client.is_tls());
                }
                ClientEvent::Done(result) => {
                    let message = sent.get(done).expect("Done for a message never sent");
                    check_done(&result, message);
                    done += 1;
                    next_step(&mut client, &mut sent, messages, message_knobs);
                }
                ClientEvent::Failed(reply) => {
                    assert!(client.is_closed());
                    assert!(!reply.is_positive(), "failed with a positive reply: {reply}");
                    ended = true;
                }
                ClientEvent::Closed => {
                    assert!(client.is_closed());
                    ended = true;
                }
                // Only for Client::command and Client::authenticate, never called here.
                ClientEvent::Reply(_) | ClientEvent::Auth(_) => panic!("{event:?} without a command"),
            }
        }
        output.extend(client.take_output());
        let Some(chunk) = chunks.next() else { break };
        client.feed(chunk);
    }
    if end_by_timeout {
        client.on_timeout();
    } else {
        client.on_closed();
    }
    while let Some(event) = client.poll_event() {
        match event {
            ClientEvent::Done(result) => {
                check_done(&result, sent.get(done).expect("Done for a message never sent"));
                done += 1;
            }
            ClientEvent::Failed(reply) => {
                assert!(!ended, "ended twice");
                assert!(!reply.is_positive(), "failed with a positive reply: {reply}");
            }
            ClientEvent::Closed => assert!(!ended, "ended twice"),
            other => panic!("{other:?} after the connection ended"),
        }
    }
    assert!(client.is_closed());
    // Every message sent was reported (at most once).
    assert_eq!(done, sent.len());
    output.extend(client.take_output());

    assert!(output.is_empty() || output.ends_with(b"\r\n"), "output not ending in CRLF");
    assert!(output.windows(2).all(|w| w[1] != b'\n' || w[0] == b'\r'), "bare LF in output");
    // Each reply the server sent may make the client write a command (or a small message).
    let replies = input.iter().filter(|&&b| b == b'\n').count();
    assert!(output.len() <= 512 * (replies + 1) * 4, "{} bytes out for {replies} replies", output.len());
});

/// What the delivery driver does when the session is ready: the next message, or QUIT.
fn next_step(client: &mut Client, sent: &mut Vec<OutboundMessage>, messages: usize, knobs: u8) {
    if !client.is_ready() {
        return;
    }
    if sent.len() < messages {
        let m = message(knobs, sent.len());
        sent.push(m.clone());
        client.send_message(m);
    } else {
        client.quit();
    }
}
