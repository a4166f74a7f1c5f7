//! The IMAP client (untagged data with literals, continuation requests, tagged
//! completions, the client's own synchronizing and non-synchronizing literals) against an
//! arbitrary server, with commands sent one by one or pipelined: never panics, stays within
//! its limits, every completion answers a command in flight and every continuation handed
//! out one that asked for it, the responses (and the protocol error, if any) do not depend
//! on how the input is split, and the typed helpers never panic on what was parsed.
#![no_main]

#[path = "shared/script.rs"]
mod script;

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use vouchmail_proto::imap::client::{
    decode_challenge, parse_sequence_set, Client, ClientError, ClientLimits, LiteralMode, Request, Response, Untagged,
};
use vouchmail_proto::imap::NameEncoding;

/// Canned server lines (see `expand`); tags A0001.. are those the client gives out.
const LINES: &[&str] = &[
    "* OK [CAPABILITY IMAP4rev2 LITERAL+ IDLE] ready\r\n",
    "* OK [CAPABILITY IMAP4rev1 LITERAL-] ready\r\n",
    "* PREAUTH ready\r\n",
    "* BYE bye\r\n",
    "* CAPABILITY IMAP4rev2 AUTH=PLAIN\r\n",
    "* 3 EXISTS\r\n",
    "* 1 EXPUNGE\r\n",
    "* FLAGS (\\Seen \\Deleted)\r\n",
    "* OK [PERMANENTFLAGS (\\Seen \\*)] ok\r\n",
    "* OK [UIDVALIDITY 3857529045] ok\r\n",
    "* 1 FETCH (UID 5 FLAGS (\\Seen) RFC822.SIZE 12 MODSEQ (7))\r\n",
    "* 2 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {10}\r\nSubject: x)\r\n",
    "* 2 FETCH (BODY[]<0> {5}\r\n",
    "hello)\r\n",
    "* 4 FETCH (BINARY[1] ~{3}\r\n\0\x01\x02)\r\n",
    "* SEARCH 1 2 3\r\n",
    "* ESEARCH (TAG \"A0001\") UID COUNT 3 ALL 1:3,5\r\n",
    "* LIST (\\HasNoChildren) \"/\" \"INBOX\"\r\n",
    "* LIST () NIL {3}\r\nx y\r\n",
    "* STATUS INBOX (MESSAGES 3 UIDNEXT 9)\r\n",
    "+ Ready\r\n",
    "+\r\n",
    "A0001 OK [APPENDUID 1 2] done\r\n",
    "A0002 NO [TOOBIG] no\r\n",
    "A0003 BAD what\r\n",
    "A0004 OK\r\n",
    "A0005 OK [CAPABILITY IMAP4rev2] ok\r\n",
    "A0006 OK\r\n",
    "(((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((x\r\n",
    "{999999999999}\r\n",
];

const COMMANDS: usize = 8;

fn request(k: u8) -> Request {
    match usize::from(k) % COMMANDS {
        0 => Request::new("NOOP"),
        1 => Request::new("FETCH").arg("1:*").arg("(UID FLAGS BODY.PEEK[])"),
        2 => Request::new("APPEND").mailbox("INBOX", NameEncoding::Utf8).literal(b"Subject: a\r\n\r\nbody\r\n"),
        3 => Request::new("APPEND").arg("INBOX").literal(&[b'x'; 5000]).literal(b"two"),
        4 => Request::new("IDLE").expect_continuation(),
        5 => Request::new("AUTHENTICATE").arg("PLAIN").expect_continuation(),
        6 => Request::new("LOGIN").astring(b"user").string(b"p\"w\r\n"),
        _ => Request::new("UID SEARCH").arg("RETURN (ALL)").arg("UNSEEN"),
    }
}

fn check_helpers(untagged: &Untagged) {
    let _ = untagged.capabilities();
    let _ = untagged.exists();
    let _ = untagged.expunge();
    let _ = untagged.flags();
    let _ = untagged.search();
    if let Some(esearch) = untagged.esearch() {
        let _ = (esearch.count(), esearch.min(), esearch.max(), esearch.all());
    }
    let _ = untagged.list();
    if let Some(status) = untagged.status() {
        let _ = status.get("MESSAGES");
    }
    if let Untagged::Status(status) = untagged {
        if let Some(code) = &status.code {
            let _ = (code.number(), code.append_uid(), code.capabilities());
        }
    }
    if let Some(fetch) = untagged.clone().into_fetch() {
        let _ = (fetch.uid(), fetch.flags(), fetch.rfc822_size(), fetch.modseq());
        let _ = (fetch.body(""), fetch.body("HEADER"), fetch.binary("1"));
    }
}

/// Runs the client over `input` in chunks; returns the responses and how it ended.
fn run(
    cmds: &[u8],
    pipelined: bool,
    literal_plus: bool,
    input: &[u8],
    splits: &[u8],
) -> (Vec<Response>, Option<ClientError>) {
    let limits = ClientLimits { max_line: 4096, max_literal: 1024, max_response: 16 * 1024, max_depth: 16 };
    let mut c = Client::new().with_limits(limits);
    if literal_plus {
        c.set_literal_mode(LiteralMode::Plus);
    }
    let mut cmds = cmds.iter().map(|&k| (k, request(k)));
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut continuing = 0usize;
    let mut responses = Vec::new();
    let (mut pos, mut k) = (0, 0);
    loop {
        loop {
            while in_flight.is_empty() || (pipelined && continuing == 0) {
                let Some((k, request)) = cmds.next() else { break };
                let tag = c.send(&request);
                if usize::from(k) % COMMANDS == 4 || usize::from(k) % COMMANDS == 5 {
                    continuing += 1;
                }
                assert!(in_flight.insert(tag.to_string()), "tag {tag} given out twice");
            }
            let _ = c.take_output();
            assert_eq!(c.is_waiting(), !in_flight.is_empty());
            let response = match c.poll_response() {
                Ok(Some(response)) => response,
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(c.poll_response(), Err(e.clone()), "the error stays");
                    return (responses, Some(e));
                }
            };
            match &response {
                Response::Done(done) => {
                    assert!(in_flight.remove(done.tag.as_str()), "a completion for {} not in flight", done.tag);
                }
                Response::Continuation(text) => {
                    assert!(continuing > 0, "a continuation handed out with no command asking");
                    let _ = decode_challenge(text);
                    if responses.len() % 2 == 0 {
                        c.idle_done();
                    } else {
                        c.send_sasl_response(b"\0u\0p");
                    }
                }
                Response::Untagged(untagged) => check_helpers(untagged),
            }
            // Which command a completion ended is the client's business; the count of
            // continuing ones only shrinks when every command is done.
            if in_flight.is_empty() {
                continuing = 0;
            }
            responses.push(response);
        }
        if pos >= input.len() {
            return (responses, None);
        }
        let step = splits.get(k % splits.len().max(1)).map_or(input.len(), |&s| usize::from(s) + 1);
        k += 1;
        let n = step.min(input.len() - pos);
        c.feed(&input[pos..pos + n]);
        pos += n;
    }
}

fuzz_target!(|data: &[u8]| {
    // Sequence sets alone.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(ranges) = parse_sequence_set(text) {
            assert!(ranges.windows(2).all(|w| w[0] <= w[1]) && ranges.iter().all(|(a, b)| a <= b));
        }
    }

    // A session: [split pattern, mode and command count, commands..., server bytes].
    if data.len() < 2 {
        return;
    }
    let nsplits = usize::from(data[0] % 8);
    let pipelined = data[1] & 0x80 != 0;
    let literal_plus = data[1] & 0x40 != 0;
    let ncmds = usize::from(data[1] & 0x1F);
    let rest = &data[2..];
    let (cmds, rest) = rest.split_at(ncmds.min(rest.len()));
    let (splits, script) = rest.split_at(nsplits.min(rest.len()));
    let input = script::expand(script, LINES, b"");

    let whole = run(cmds, pipelined, literal_plus, &input, &[]);
    assert_eq!(run(cmds, pipelined, literal_plus, &input, splits), whole);
    assert_eq!(run(cmds, pipelined, literal_plus, &input, &[0]), whole);
});
