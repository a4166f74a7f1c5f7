//! The strict reply reader the federation client uses (SPEC 8.1: a relayed reply is passed
//! on unchanged) on arbitrary peer bytes. Checked: no panic; the replies and the error do not
//! depend on how the input is split; each reply's octets are exactly the input's lines,
//! every one `ddd-` or `ddd ` with one code, CRLF-ended, with no other CR, LF or NUL, so
//! passing them on can never inject a line; the limits hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouchmail_proto::smtp::client::reply::{ReplyLimits, ReplyParser, ReplySyntaxError, ServerReply, MAX_LINE};

const MAX_LINES: usize = 64;
const MAX_BYTES: usize = 16 * 1024;

fn run(input: &[u8], splits: &[u8]) -> (Vec<ServerReply>, Option<ReplySyntaxError>) {
    let mut parser = ReplyParser::strict(ReplyLimits::new(MAX_LINES, MAX_BYTES));
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
        assert!(parser.pending() <= MAX_BYTES + MAX_LINE, "{} bytes buffered", parser.pending());
    }
    (replies, None)
}

fn check(reply: &ServerReply) {
    let texts = reply.texts();
    assert!((200..600).contains(&reply.code));
    assert!(!reply.lines.is_empty() && reply.lines.len() <= MAX_LINES);
    assert!(reply.wire.len() <= MAX_BYTES);
    let text = std::str::from_utf8(&reply.wire).expect("UTF-8");
    let lines: Vec<&str> = text.strip_suffix("\r\n").expect("ends in CRLF").split("\r\n").collect();
    assert_eq!(lines.len(), reply.lines.len());
    let code = reply.code.to_string();
    assert_eq!(texts.len(), reply.lines.len());
    for (i, (line, parsed)) in lines.iter().zip(&texts).enumerate() {
        assert!(!line.contains(['\r', '\n', '\0']), "{line:?}");
        assert!(line.starts_with(&code));
        let last = i + 1 == lines.len();
        match line.as_bytes().get(3) {
            Some(b'-') => assert!(!last),
            Some(b' ') | None => assert!(last),
            other => panic!("separator {other:?}"),
        }
        assert_eq!(line.get(4..).unwrap_or(""), parsed);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&nsplits, rest)) = data.split_first() else { return };
    let (splits, input) = rest.split_at(usize::from(nsplits % 8).min(rest.len()));
    let whole = run(input, &[]);
    assert_eq!(run(input, splits), whole);
    assert_eq!(run(input, &[0]), whole);
    let (replies, error) = whole;
    let consumed: usize = replies.iter().map(|r| r.wire.len()).sum();
    let concatenated: Vec<u8> = replies.iter().flat_map(|r| r.wire.iter().copied()).collect();
    assert_eq!(&input[..consumed], concatenated.as_slice(), "the octets are the input's");
    let _ = error;
    for reply in &replies {
        check(reply);
    }
});
