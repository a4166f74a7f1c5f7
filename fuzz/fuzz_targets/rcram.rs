//! Remote authentication (SPEC 8.2): the bound challenge's parser and the client's check,
//! the AUTH arguments, and the RCRAM-MD5 client state machine. Never panic; a challenge
//! that parses writes back to itself; the client answers only a challenge bound to the host
//! it dialed and issued within 5 minutes (else it sends `*`); its output does not depend on
//! how the server's bytes are split; the legacy mode's reading of a client's answer
//! (SPEC 8.2 step 6) gives a user name only as the answer wrote it, and the same again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouchmail_proto::messenger::rcram::{
    answer_is_for, check_binding, decode_answer, parse_rcram_argument, parse_verify_arguments, Challenge, RcramClient,
    RcramEvent, RcramOutcome, RelayEvent, VerifierRelay, MAX_AGE_SECS,
};

/// The verifier's relay with the input as the home server's bytes (and the client's answer
/// line): every line to the client is one CRLF-terminated line with no other control
/// characters, and it ends with exactly one outcome.
fn check_relay(home: &[u8], client: &[u8]) {
    let mut relay = VerifierRelay::new("glen@galkam.test", DIALED);
    relay.home_ready(&["mx.galkam.test".to_string(), "AUTH X-RCRAM-VERIFY".to_string()]);
    relay.feed_home(home);
    relay.client_line(client);
    relay.feed_home(home);
    relay.home_unreachable();
    let mut done = 0;
    while let Some(event) = relay.poll_event() {
        match event {
            RelayEvent::ToClient(bytes) | RelayEvent::ToHome(bytes) => {
                assert!(bytes.ends_with(b"\r\n"));
                let body = &bytes[..bytes.len() - 2];
                assert!(!body.iter().any(|&b| b == b'\r' || b == b'\n'));
            }
            RelayEvent::ReadClient => {}
            RelayEvent::Done(_) => done += 1,
        }
    }
    assert_eq!(done, 1);
}
use vouchmail_proto::sasl;

const DIALED: &str = "mx.lrsupport.test";
const NOW: i64 = 1_796_119_200;

/// Feeds `input` in chunks; returns what the client sent and how it ended.
fn run(input: &[u8], splits: &[u8]) -> (Vec<u8>, Option<RcramOutcome>) {
    let mut client = RcramClient::new("glen@galkam.test", "s3cret", DIALED, NOW);
    client.start();
    let mut output = client.take_output();
    let mut pos = 0;
    let mut k = 0;
    while pos < input.len() && !client.is_done() {
        let step = splits.get(k % splits.len().max(1)).map_or(input.len(), |&s| usize::from(s) + 1);
        k += 1;
        let n = step.min(input.len() - pos);
        client.feed(&input[pos..pos + n]);
        output.extend(client.take_output());
        pos += n;
    }
    let outcome = client.poll_event().map(|RcramEvent::Done(o)| o);
    (output, outcome)
}

/// SPEC 8.2 step 6: a decoded answer names a non-empty user without control characters,
/// written back it decodes the same, and it is "for" exactly that user.
fn check_answer_decoding(line: &[u8]) {
    if let Ok(answer) = decode_answer(line) {
        assert!(!answer.user.is_empty() && !answer.user.contains(char::is_control));
        let hex: String = answer.digest.iter().map(|b| format!("{b:02x}")).collect();
        let again = sasl::encode_response(format!("{} {hex}", answer.user).as_bytes());
        assert_eq!(decode_answer(again.as_bytes()).as_ref(), Ok(&answer));
        assert!(answer_is_for(line, &answer.user));
    } else {
        assert!(!answer_is_for(line, "glen@galkam.test"));
    }
    let encoded = sasl::encode_response(line);
    if let Ok(answer) = decode_answer(encoded.as_bytes()) {
        assert!(line.starts_with(answer.user.as_bytes()));
    }
}

fuzz_target!(|data: &[u8]| {
    check_answer_decoding(data);
    let cut = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    check_relay(&data[..cut], data.get(cut + 1..).unwrap_or(&[]));
    if let Ok(challenge) = Challenge::parse(data) {
        assert_eq!(Challenge::parse(challenge.text().as_bytes()).as_ref(), Ok(&challenge));
    }
    if let Ok(bound) = check_binding(data, DIALED, NOW) {
        assert!(bound.verifier.trim_end_matches('.').eq_ignore_ascii_case(DIALED));
        assert!((NOW - bound.unixtime).abs() <= MAX_AGE_SECS);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(address) = parse_rcram_argument(Some(text)) {
            assert_eq!(parse_rcram_argument(Some(&address)).as_ref(), Ok(&address));
        }
        let _ = parse_verify_arguments(text);
    }

    // The client against whatever the server says, first as a 334 of the input itself.
    let mut as_challenge = format!("334 {}\r\n", sasl::encode_challenge(data)).into_bytes();
    as_challenge.extend_from_slice(b"235 2.7.0 ok\r\n");
    let (output, outcome) = run(&as_challenge, &[]);
    let answered = output.split(|&b| b == b'\n').nth(1).is_some_and(|l| !l.is_empty() && l != b"*\r");
    assert_eq!(answered, check_binding(data, DIALED, NOW).is_ok());
    if answered {
        assert!(matches!(outcome, Some(RcramOutcome::Authenticated(_))));
    }

    let Some((&nsplits, rest)) = data.split_first() else { return };
    let (splits, input) = rest.split_at(usize::from(nsplits % 8).min(rest.len()));
    let whole = run(input, &[]);
    assert_eq!(run(input, splits), whole);
    assert_eq!(run(input, &[0]), whole);
    for line in whole.0.split_inclusive(|&b| b == b'\n') {
        assert!(line.ends_with(b"\r\n"));
    }
});
