//! The SMTP client's reply reader and EHLO parser on arbitrary server bytes: never panic,
//! the replies (and the error, if any) do not depend on how the input is split, the
//! buffer of an incomplete line stays bounded, a reply written back out parses to the same
//! reply (with our octets), and the capabilities of an EHLO reply survive being announced again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouchmail_proto::sasl::Mechanism;
use vouchmail_proto::smtp::client::reply::ReplySyntaxError;
use vouchmail_proto::smtp::client::{Capabilities, ReplyParser, ServerReply};

/// The parser's line limit (private there): a partial line never holds more, plus a CR.
const MAX_LINE: usize = 4096;

/// Feeds `input` in chunks of the given sizes, reading every reply as soon as it is
/// complete; stops at the first syntax error.
fn run(input: &[u8], splits: &[u8]) -> (Vec<ServerReply>, Option<ReplySyntaxError>) {
    let mut parser = ReplyParser::default();
    let mut replies = Vec::new();
    let mut pos = 0;
    let mut k = 0;
    while pos < input.len() {
        let step = splits.get(k % splits.len().max(1)).map_or(input.len(), |&s| usize::from(s) + 1);
        k += 1;
        let n = step.min(input.len() - pos);
        parser.feed(&input[pos..pos + n]);
        pos += n;
        loop {
            match parser.next_reply() {
                Ok(Some(reply)) => replies.push(reply),
                Ok(None) => break,
                Err(e) => return (replies, Some(e)),
            }
        }
        // Nothing complete is left behind, and what is left is one bounded partial line.
        assert!(parser.pending() <= MAX_LINE + 1, "{} bytes buffered", parser.pending());
    }
    (replies, None)
}

fn check_reply(reply: &ServerReply) {
    assert!((100..600).contains(&reply.code), "code {}", reply.code);
    assert!(!reply.lines.is_empty());
    assert!(reply.lines.iter().all(|l| !l.contains('\n')));
    if let Some(e) = reply.enhanced {
        assert_eq!(u16::from(e.0), reply.code / 100);
        assert!(e.1 <= 999 && e.2 <= 999);
    }
    // Written the way our server writes replies, it reads back the same (control
    // characters are replaced on writing, so only without them).
    if !reply.lines.iter().any(|l| l.chars().any(char::is_control)) {
        let wire = reply.to_reply().to_wire();
        let mut parser = ReplyParser::default();
        parser.feed(&wire);
        let again = parser.next_reply().expect("our own reply parses").expect("complete");
        // The same reply; its octets (`wire`) are ours now, not the peer's (a bare LF
        // became CRLF, a lone code gained its space).
        let meaning = |r: &ServerReply| (r.code, r.enhanced, r.lines.clone());
        assert_eq!(meaning(&again), meaning(reply), "{}", String::from_utf8_lossy(&wire));
        assert_eq!(again.wire, wire);
        assert_eq!(parser.pending(), 0);
    }
}

/// The EHLO lines announcing exactly `caps`.
fn announce(caps: &Capabilities) -> Vec<String> {
    let mut lines = vec!["mx.fuzz.test".to_string()];
    let flags = [
        (caps.pipelining, "PIPELINING"),
        (caps.eight_bit_mime, "8BITMIME"),
        (caps.smtputf8, "SMTPUTF8"),
        (caps.dsn, "DSN"),
        (caps.starttls, "STARTTLS"),
        (caps.enhanced_status_codes, "ENHANCEDSTATUSCODES"),
        (caps.chunking, "CHUNKING"),
    ];
    lines.extend(flags.iter().filter(|(on, _)| *on).map(|(_, name)| name.to_string()));
    if let Some(size) = caps.size {
        lines.push(format!("SIZE {size}"));
    }
    if caps.auth {
        let names: Vec<&str> = caps.auth_mechanisms.iter().map(|m| m.name()).collect();
        lines.push(format!("AUTH {}", names.join(" ")).trim_end().to_string());
    }
    lines
}

fn check_ehlo(lines: &[String]) {
    let caps = Capabilities::from_ehlo(lines);
    assert!(caps.extended);
    assert!(caps.auth || caps.auth_mechanisms.is_empty());
    for (i, m) in caps.auth_mechanisms.iter().enumerate() {
        assert!(!caps.auth_mechanisms[..i].contains(m), "duplicate mechanism {m}");
        assert!(Mechanism::ALL.contains(m));
    }
    // The typed capabilities survive; the raw keyword and mechanism names (kept for
    // `offers`) are whatever the server wrote, so they are left out of the comparison.
    let typed = |mut c: Capabilities| {
        c.keywords.clear();
        c.auth_names.clear();
        c
    };
    assert_eq!(typed(Capabilities::from_ehlo(&announce(&caps))), typed(caps));
}

fuzz_target!(|data: &[u8]| {
    // The first byte chooses the split pattern; the rest is what the server sent.
    let Some((&nsplits, rest)) = data.split_first() else { return };
    let (splits, input) = rest.split_at(usize::from(nsplits % 8).min(rest.len()));

    let whole = run(input, &[]);
    assert_eq!(run(input, splits), whole);
    assert_eq!(run(input, &[0]), whole);

    let (replies, _) = whole;
    for reply in &replies {
        check_reply(reply);
        check_ehlo(&reply.lines);
    }
});
