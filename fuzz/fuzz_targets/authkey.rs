//! The AuthKey VERIFY codec (SPEC 7.2), its TCP session and its client check: never panic
//! on any input, whatever parses writes a line that parses back to itself, ERRORs echo only
//! a seq that was really there, no UDP reply is larger than its request plus 16 octets or
//! answers a datagram over 512, and the session's output does not depend on how the input
//! is split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouchmail_proto::authkey::codec::{MAX_DATAGRAM, UDP_REPLY_SLACK};
use vouchmail_proto::authkey::record::parse_as_record;
use vouchmail_proto::authkey::{
    parse_request, parse_response, udp_reply, Event, PendingVerify, Response, Session, Verdict,
};

const KEY: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01";

fn check_udp(datagram: &[u8], answer: &Response) -> Option<Vec<u8>> {
    let out = udp_reply(datagram, answer);
    if let Some(out) = &out {
        assert!(datagram.len() <= MAX_DATAGRAM);
        assert!(out.len() <= datagram.len() + UDP_REPLY_SLACK);
        assert_eq!(parse_response(out).as_ref(), Ok(answer));
    }
    out
}

fn check_response_round_trip(response: &Response) {
    assert_eq!(parse_response(response.to_line().as_bytes()).as_ref(), Ok(response));
    assert_eq!(parse_response(response.to_crlf_line().as_bytes()).as_ref(), Ok(response));
}

/// Feeds `input` in chunks of the given sizes, answering every request at once (valid when
/// its key starts with `0`); returns the output.
fn run(input: &[u8], splits: &[u8]) -> Vec<u8> {
    let mut session = Session::new();
    let mut output = Vec::new();
    let mut pos = 0;
    let mut k = 0;
    loop {
        while let Some(Event::Verify(request)) = session.poll_event() {
            let verdict = if request.key().starts_with('0') { Verdict::Valid } else { Verdict::Invalid };
            assert!(session.answer(verdict).is_ok());
        }
        assert_eq!(session.unanswered(), 0);
        output.extend(session.take_output());
        if pos >= input.len() {
            break;
        }
        let step = splits.get(k % splits.len().max(1)).map_or(input.len(), |&s| usize::from(s) + 1);
        k += 1;
        let n = step.min(input.len() - pos);
        session.feed(&input[pos..pos + n]);
        pos += n;
    }
    output
}

fuzz_target!(|data: &[u8]| {
    // SPEC 7.3: TXT record text (from DNS, so from the network), one record per line.
    let records: Vec<String> = String::from_utf8_lossy(data).lines().map(str::to_string).collect();
    if let Some((host, port)) = parse_as_record(&records) {
        assert!(!host.is_empty() && port != 0);
    }
    // The request parser on the whole input, as one UDP datagram.
    match parse_request(data) {
        Ok(request) => {
            assert_eq!(parse_request(request.to_line().as_bytes()).as_ref(), Ok(&request));
            assert_eq!(parse_request(request.to_crlf_line().as_bytes()).as_ref(), Ok(&request));
            for verdict in [Verdict::Valid, Verdict::Invalid] {
                let reply = Response::Reply(request.reply(verdict));
                check_response_round_trip(&reply);
                // A VERIFY_REPLY is always shorter than its request, so it is always sent.
                assert_eq!(check_udp(data, &reply).is_some(), data.len() <= MAX_DATAGRAM);
            }
        }
        Err(e) => {
            if let Some(seq) = e.seq() {
                let head = format!("VERIFY {seq}");
                assert!(data.starts_with(head.as_bytes()));
                assert!(matches!(data.get(head.len()), None | Some(b' ' | b'\r' | b'\n')));
            }
            let reply = Response::Error(e.reply());
            check_response_round_trip(&reply);
            check_udp(data, &reply);
        }
    }

    // The response parser and the client check.
    if let Ok(response) = parse_response(data) {
        check_response_round_trip(&response);
        check_udp(data, &response);
    }
    if let Ok(pending) = PendingVerify::new("seq1", "User@Example.com", KEY) {
        if let Ok(verdict) = pending.check(data) {
            match parse_response(data) {
                Ok(Response::Reply(r)) => {
                    assert_eq!(r.seq(), "seq1");
                    assert_eq!(r.verdict(), verdict);
                }
                other => panic!("verdict from {other:?}"),
            }
        }
    }

    // The TCP session, with the first byte choosing the split pattern.
    let Some((&nsplits, rest)) = data.split_first() else { return };
    let (splits, input) = rest.split_at(usize::from(nsplits % 8).min(rest.len()));
    let output = run(input, splits);
    assert!(output.is_empty() || output.ends_with(b"\r\n"));
    for line in output.split_inclusive(|&b| b == b'\n') {
        assert!(line.ends_with(b"\r\n"));
        assert!(parse_response(line).is_ok(), "unparsable output {line:?}");
    }
    assert_eq!(run(input, &[]), output);
    assert_eq!(run(input, &[0]), output);
});
