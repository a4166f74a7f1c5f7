//! The fuzzers' scripts: each byte stands for a canned line, `canned[b % len]` followed by
//! `after`, except 0xFF, which starts a raw line: the bytes after it up to and including
//! the next LF. A few bytes so get deep into a session, and raw bytes still reach every
//! corner of the parser.

pub fn expand(script: &[u8], canned: &[&str], after: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < script.len() {
        let b = script[i];
        if b != 0xFF {
            out.extend_from_slice(canned[usize::from(b) % canned.len()].as_bytes());
            out.extend_from_slice(after);
            i += 1;
            continue;
        }
        let start = i + 1;
        let end = script[start..].iter().position(|&c| c == b'\n').map_or(script.len(), |p| start + p + 1);
        out.extend_from_slice(&script[start..end]);
        i = end;
    }
    out
}
