//! DATA decoding: never panics, the result does not depend on how the input is split, and
//! the stored body is CRLF-clean (no bare CR, no bare LF: no SMTP smuggling downstream).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouchmail_proto::smtp::data::{dot_stuff, DataDecoder, DataEnd};

fn crlf_clean(body: &[u8]) -> bool {
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\r' if body.get(i + 1) == Some(&b'\n') => i += 2,
            b'\r' | b'\n' => return false,
            _ => i += 1,
        }
    }
    true
}

fn run(input: &[u8], splits: &[u8], max_size: usize, max_line: usize) -> (usize, Option<DataEnd>, Vec<u8>) {
    let mut d = DataDecoder::new(max_size, max_line);
    let mut pos = 0;
    let mut k = 0;
    while pos < input.len() {
        let step = splits.get(k % splits.len().max(1)).map_or(input.len(), |&s| usize::from(s) + 1);
        k += 1;
        let n = step.min(input.len() - pos);
        let (used, end) = d.feed(&input[pos..pos + n]);
        assert!(used <= n);
        pos += used;
        if end.is_some() {
            assert!(d.is_done());
            return (pos, end, d.take_body());
        }
        assert_eq!(used, n);
    }
    (pos, None, d.take_body())
}

fuzz_target!(|data: &[u8]| {
    // First bytes choose the limits and the split pattern; the rest is the input.
    if data.len() < 4 {
        return;
    }
    let max_size = usize::from(u16::from_le_bytes([data[0], data[1]]));
    let max_line = usize::from(data[2]) + 1;
    let nsplits = usize::from(data[3] % 16);
    let rest = &data[4..];
    let (splits, input) = rest.split_at(nsplits.min(rest.len()));

    let one = run(input, &[], max_size, max_line);
    let split = run(input, splits, max_size, max_line);
    let bytes = run(input, &[0], max_size, max_line);
    assert_eq!(one, split);
    assert_eq!(one, bytes);

    let (consumed, end, body) = one;
    assert!(crlf_clean(&body));
    assert!(body.len() <= max_size);
    if end.is_some() {
        let c = &input[..consumed];
        assert!(c == b".\r\n" || c.ends_with(b"\r\n.\r\n"));
    }
    if end == Some(DataEnd::Ok) {
        // What the client side would send for this body decodes to the same body.
        let mut wire = Vec::new();
        dot_stuff(&body, &mut wire);
        let (n, end2, body2) = run(&wire, &[], usize::MAX, usize::MAX);
        assert_eq!((n, end2), (wire.len(), Some(DataEnd::Ok)));
        assert_eq!(body2, body);
    }

    // The client side accepts anything and always produces decodable data.
    let mut wire = Vec::new();
    dot_stuff(input, &mut wire);
    let (n, end3, body3) = run(&wire, &[], usize::MAX, usize::MAX);
    assert_eq!((n, end3), (wire.len(), Some(DataEnd::Ok)));
    assert!(crlf_clean(&body3));
});
