//! The DATA body decoder (RFC 5321 4.1.1.4, 4.5.2) and the client-side dot-stuffer.
//!
//! Only the exact sequence CRLF "." CRLF ends the data; bare CR and bare LF never do
//! (no SMTP smuggling). Stored content is CRLF-clean: bare CR and bare LF are turned into
//! CRLF. Only lines that began after a real CRLF are dot-unstuffed.

/// How the data ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataEnd {
    /// The whole message was stored.
    Ok,
    /// The message exceeded `max_size`; the stored body is incomplete (RFC 5321 4.5.3.1.10,
    /// 552).
    TooLarge,
    /// A line exceeded `max_line` octets including CRLF (RFC 5321 4.5.3.1.6).
    LineTooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line that follows a real CRLF, or at the very start of the data
    /// (RFC 5321 4.1.1.4: the CRLF ending the DATA command counts).
    LineStart,
    /// Saw "." at `LineStart`.
    Dot,
    /// Saw "." CR at `LineStart`.
    DotCr,
    /// Inside a line, or at the start of a line that followed a bare CR or bare LF.
    Mid,
    /// Saw a CR that is not part of ". CR"; waiting to see if LF follows.
    Cr,
    /// CRLF "." CRLF seen.
    Done,
}

/// Incremental decoder for the text after `354`, up to and including CRLF "." CRLF.
///
/// Feed it whatever arrived from the network, in pieces of any size; the result does not
/// depend on how the input is split.
#[derive(Debug, Clone)]
pub struct DataDecoder {
    state: State,
    body: Vec<u8>,
    max_size: usize,
    max_line: usize,
    /// Octets on the current line so far (after unstuffing, without the line ending).
    line_len: usize,
    /// Total octets of decoded content, including what was not stored.
    total: u64,
    /// Octets stored (in `body` or already taken out of it through [`DataDecoder::body_mut`]).
    stored: usize,
    /// Content is counted but not kept (the transaction is refused already).
    discarding: bool,
    too_large: bool,
    line_too_long: bool,
}

impl DataDecoder {
    /// `max_size`: the most octets of (decoded, CRLF-normalised) body to store.
    /// `max_line`: the longest line allowed, in octets including CRLF (1000 per RFC 5321
    /// 4.5.3.1.6, which does not count the dot added for transparency).
    pub fn new(max_size: usize, max_line: usize) -> DataDecoder {
        DataDecoder {
            state: State::LineStart,
            body: Vec::new(),
            max_size,
            max_line,
            line_len: 0,
            total: 0,
            stored: 0,
            discarding: false,
            too_large: false,
            line_too_long: false,
        }
    }

    /// Consumes `input` up to and including the end marker. Returns how many bytes were
    /// consumed and, once the marker has been seen, how the data ended. Bytes after the
    /// marker (pipelined commands) are not consumed. After the end, further calls consume
    /// nothing and report the same end again.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<DataEnd>) {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Done {
                break;
            }
            if self.state == State::Mid {
                // Fast path: copy the run of ordinary bytes up to the next CR or LF.
                let run = input
                    .get(i..)
                    .unwrap_or(&[])
                    .iter()
                    .position(|&b| b == b'\r' || b == b'\n')
                    .unwrap_or(input.len() - i);
                if run > 0 {
                    let chunk = input.get(i..i + run).unwrap_or(&[]);
                    self.content(chunk);
                    i += run;
                    continue;
                }
            }
            let b = input.get(i).copied().unwrap_or(0);
            i += 1;
            self.step(b);
        }
        (i, self.end())
    }

    /// True once CRLF "." CRLF has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The result, once done.
    pub fn end(&self) -> Option<DataEnd> {
        if self.state != State::Done {
            None
        } else if self.too_large {
            Some(DataEnd::TooLarge)
        } else if self.line_too_long {
            Some(DataEnd::LineTooLong)
        } else {
            Some(DataEnd::Ok)
        }
    }

    /// The body stored so far: CRLF-clean, dot-unstuffed, without the end marker.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Takes the stored body, leaving the decoder's buffer empty.
    pub fn take_body(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.body)
    }

    /// The buffered body, for a caller that moves parts of it elsewhere (spilling a large
    /// message to disk) as it grows. The size limit counts what was taken out as well.
    pub fn body_mut(&mut self) -> &mut Vec<u8> {
        &mut self.body
    }

    /// Keeps consuming to the end marker without storing anything more (the reply is
    /// already decided); what was stored is dropped.
    pub fn discard(&mut self) {
        self.discarding = true;
        self.body = Vec::new();
    }

    /// Octets of decoded content seen so far, including any not stored because of
    /// `max_size`.
    pub fn content_len(&self) -> u64 {
        self.total
    }

    /// Ready for a new message, with the same limits.
    pub fn reset(&mut self) {
        *self = DataDecoder::new(self.max_size, self.max_line);
    }

    fn step(&mut self, b: u8) {
        self.state = match (self.state, b) {
            (State::Done, _) => State::Done,
            // RFC 5321 4.5.2: a line starting with "." after a real CRLF.
            (State::LineStart, b'.') => State::Dot,
            (State::LineStart | State::Mid, b'\r') => State::Cr,
            (State::LineStart | State::Mid, b'\n') => {
                // Bare LF: a line ending in the content, not a real CRLF.
                self.newline();
                State::Mid
            }
            (State::LineStart | State::Mid, other) => {
                self.content(&[other]);
                State::Mid
            }
            (State::Dot, b'\r') => State::DotCr,
            (State::Dot, b'\n') => {
                // CRLF "." LF: content (a line holding just "."), never the end.
                self.content(b".");
                self.newline();
                State::Mid
            }
            (State::Dot, other) => {
                // RFC 5321 4.5.2: "If the first character is a period and there are other
                // characters on the line, the first character is deleted."
                self.content(&[other]);
                State::Mid
            }
            // RFC 5321 4.1.1.4: CRLF "." CRLF ends the mail data.
            (State::DotCr, b'\n') => State::Done,
            (State::DotCr, b'\r') => {
                // "." then a bare CR: the line is just "."; the second CR starts over.
                self.content(b".");
                self.newline();
                State::Cr
            }
            (State::DotCr, other) => {
                self.content(b".");
                self.newline();
                self.content(&[other]);
                State::Mid
            }
            (State::Cr, b'\n') => {
                self.newline();
                State::LineStart
            }
            (State::Cr, b'\r') => {
                // Bare CR, then possibly the CR of a CRLF.
                self.newline();
                State::Cr
            }
            (State::Cr, other) => {
                self.newline();
                self.content(&[other]);
                State::Mid
            }
        };
    }

    /// Content bytes on the current line (no CR or LF).
    fn content(&mut self, bytes: &[u8]) {
        self.line_len = self.line_len.saturating_add(bytes.len());
        // RFC 5321 4.5.3.1.6: the line including CRLF must fit in max_line.
        if self.line_len.saturating_add(2) > self.max_line {
            self.line_too_long = true;
        }
        self.store(bytes);
    }

    /// A line ending (real, or a normalised bare CR/LF).
    fn newline(&mut self) {
        self.line_len = 0;
        self.store(b"\r\n");
    }

    /// Appends to the body while it fits in `max_size`. Content is stored up to the
    /// limit exactly; a CRLF is stored whole or not at all (so the body never ends in a
    /// bare CR). The result does not depend on how the input was split.
    fn store(&mut self, bytes: &[u8]) {
        self.total = self.total.saturating_add(bytes.len() as u64);
        if self.too_large || self.discarding {
            return;
        }
        let room = self.max_size.saturating_sub(self.stored);
        if bytes.len() <= room {
            self.body.extend_from_slice(bytes);
            self.stored += bytes.len();
            return;
        }
        // Stop storing but keep consuming to the end marker.
        self.too_large = true;
        if bytes != b"\r\n" {
            let part = bytes.get(..room).unwrap_or(&[]);
            self.body.extend_from_slice(part);
            self.stored += part.len();
        }
    }
}

/// Client side: writes `body` as SMTP mail data into `out`: line endings normalised to
/// CRLF (bare CR and bare LF included), a final CRLF added if missing, lines starting with
/// "." given an extra "." (RFC 5321 4.5.2), and the terminating ".\r\n" appended.
pub fn dot_stuff(body: &[u8], out: &mut Vec<u8>) {
    out.reserve(body.len() + body.len() / 64 + 5);
    let mut at_line_start = true;
    let mut pending_cr = false;
    for &b in body {
        if pending_cr {
            pending_cr = false;
            out.extend_from_slice(b"\r\n");
            at_line_start = true;
            if b == b'\n' {
                continue;
            }
        }
        match b {
            b'\r' => pending_cr = true,
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                at_line_start = true;
            }
            _ => {
                if at_line_start && b == b'.' {
                    out.push(b'.');
                }
                out.push(b);
                at_line_start = false;
            }
        }
    }
    if pending_cr || !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: usize = 1 << 20;

    fn decode(input: &[u8]) -> (usize, Option<DataEnd>, Vec<u8>) {
        let mut d = DataDecoder::new(BIG, 1000);
        let (n, end) = d.feed(input);
        (n, end, d.take_body())
    }

    fn decode_with(input: &[u8], max_size: usize, max_line: usize) -> (usize, Option<DataEnd>, Vec<u8>) {
        let mut d = DataDecoder::new(max_size, max_line);
        let (n, end) = d.feed(input);
        (n, end, d.take_body())
    }

    /// Feeds `input` split at the given chunk sizes (cycled); stops at the end marker.
    fn decode_split(
        input: &[u8],
        sizes: &mut dyn FnMut() -> usize,
        max_size: usize,
        max_line: usize,
    ) -> (usize, Option<DataEnd>, Vec<u8>) {
        let mut d = DataDecoder::new(max_size, max_line);
        let mut pos = 0;
        let mut end = None;
        while pos < input.len() {
            let n = sizes().max(1).min(input.len() - pos);
            let (used, e) = d.feed(&input[pos..pos + n]);
            assert!(used <= n);
            pos += used;
            if e.is_some() {
                end = e;
                break;
            }
            assert_eq!(used, n, "consumed less without ending");
        }
        (pos, end, d.take_body())
    }

    /// A tiny deterministic PRNG (xorshift64*), so the tests need no dependencies.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn no_bare_cr_or_lf(body: &[u8]) -> bool {
        let mut i = 0;
        while i < body.len() {
            match body[i] {
                b'\r' => {
                    if body.get(i + 1) != Some(&b'\n') {
                        return false;
                    }
                    i += 2;
                }
                b'\n' => return false,
                _ => i += 1,
            }
        }
        true
    }

    #[test]
    fn empty_message() {
        // The position right after DATA counts as after a CRLF.
        assert_eq!(decode(b".\r\n"), (3, Some(DataEnd::Ok), vec![]));
        assert_eq!(decode(b"\r\n.\r\n"), (5, Some(DataEnd::Ok), b"\r\n".to_vec()));
    }

    #[test]
    fn simple_message_and_pipelined_rest() {
        let input = b"Subject: hi\r\n\r\nHello\r\n.\r\nQUIT\r\n";
        let (n, end, body) = decode(input);
        assert_eq!(end, Some(DataEnd::Ok));
        assert_eq!(&input[n..], b"QUIT\r\n");
        assert_eq!(body, b"Subject: hi\r\n\r\nHello\r\n");
    }

    #[test]
    fn incomplete_input_is_all_consumed() {
        let mut d = DataDecoder::new(BIG, 1000);
        assert_eq!(d.feed(b"abc\r\n."), (6, None));
        assert!(!d.is_done());
        assert_eq!(d.feed(b"\r"), (1, None));
        assert_eq!(d.feed(b"\nMAIL"), (1, Some(DataEnd::Ok)));
        assert!(d.is_done());
        // After the end nothing more is consumed.
        assert_eq!(d.feed(b"MAIL"), (0, Some(DataEnd::Ok)));
        assert_eq!(d.body(), b"abc\r\n");
        d.reset();
        assert!(!d.is_done());
        assert_eq!(d.body(), b"");
        assert_eq!(d.feed(b".\r\n"), (3, Some(DataEnd::Ok)));
    }

    #[test]
    fn dot_unstuffing() {
        // RFC 5321 4.5.2.
        let (_, end, body) = decode(b"..\r\n..foo\r\n.bar\r\nx.y\r\n.\r\n");
        assert_eq!(end, Some(DataEnd::Ok));
        assert_eq!(body, b".\r\n.foo\r\nbar\r\nx.y\r\n");
        // First line of the data is also unstuffed.
        let (_, _, body) = decode(b"..hidden\r\n.\r\n");
        assert_eq!(body, b".hidden\r\n");
    }

    #[test]
    fn smuggling_sequences_are_content() {
        // None of these end the data: only CRLF "." CRLF does.
        for seq in [
            &b"a\n.\nb"[..],
            b"a\r\n.\nb",
            b"a\n.\r\nb",
            b"a\r.\rb",
            b"a\r.\r\nb",
            b"a\r\n.\rb",
            b"a\r\n.\r\rb",
            b"a\n.\n",
            b"\n.\n",
            b".\n",
            b".\r",
            b"\r.\r\n",
        ] {
            let mut input = seq.to_vec();
            input.extend_from_slice(b"\r\n.\r\n");
            let (n, end, body) = decode(&input);
            assert_eq!(n, input.len(), "{:?}", String::from_utf8_lossy(seq));
            assert_eq!(end, Some(DataEnd::Ok));
            assert!(no_bare_cr_or_lf(&body), "{:?}", String::from_utf8_lossy(&body));
        }
    }

    #[test]
    fn smuggling_normalisation_exact() {
        // A line after a bare LF is not unstuffed: its dot is content.
        let (_, _, body) = decode(b"a\n.\nMAIL FROM:<x@y>\r\n.\r\n");
        assert_eq!(body, b"a\r\n.\r\nMAIL FROM:<x@y>\r\n");
        let (_, _, body) = decode(b"a\r\n.\nb\r\n.\r\n");
        assert_eq!(body, b"a\r\n.\r\nb\r\n");
        let (_, _, body) = decode(b"a\n.\r\nb\r\n.\r\n");
        assert_eq!(body, b"a\r\n.\r\nb\r\n");
        let (_, _, body) = decode(b"a\r.\rb\r\n.\r\n");
        assert_eq!(body, b"a\r\n.\r\nb\r\n");
        // Only real-CRLF lines are unstuffed: "..x" after a bare LF keeps both dots.
        let (_, _, body) = decode(b"a\n..x\r\n..x\r\n.\r\n");
        assert_eq!(body, b"a\r\n..x\r\n.x\r\n");
        // ". CR CR LF": the line "." ended by a bare CR, then an empty line.
        let (_, _, body) = decode(b".\r\r\nz\r\n.\r\n");
        assert_eq!(body, b".\r\n\r\nz\r\n");
        // ". CR x"
        let (_, _, body) = decode(b".\rx\r\n.\r\n");
        assert_eq!(body, b".\r\nx\r\n");
        // A bare CR followed by a real CRLF "." CRLF is the end.
        let (n, end, body) = decode(b"a\r\r\n.\r\nrest");
        assert_eq!((n, end), (7, Some(DataEnd::Ok)));
        assert_eq!(body, b"a\r\n\r\n");
        // Many CRs.
        let (_, _, body) = decode(b"\r\r\r\n.\r\n");
        assert_eq!(body, b"\r\n\r\n\r\n");
    }

    #[test]
    fn too_large_keeps_consuming() {
        let input = b"0123456789\r\n0123456789\r\n.\r\nNOOP\r\n";
        let (n, end, body) = decode_with(input, 15, 1000);
        assert_eq!(end, Some(DataEnd::TooLarge));
        assert_eq!(&input[n..], b"NOOP\r\n");
        assert!(body.len() <= 15);
        // Exactly at the limit is fine.
        let (_, end, body) = decode_with(b"0123456789\r\n.\r\n", 12, 1000);
        assert_eq!(end, Some(DataEnd::Ok));
        assert_eq!(body.len(), 12);
        let (_, end, _) = decode_with(b"0123456789\r\n.\r\n", 11, 1000);
        assert_eq!(end, Some(DataEnd::TooLarge));
        let mut d = DataDecoder::new(4, 1000);
        d.feed(b"0123456789\r\n.\r\n");
        assert_eq!(d.content_len(), 12);
        // Size limit wins over line length when both are exceeded.
        let (_, end, _) = decode_with(b"0123456789\r\n.\r\n", 4, 5);
        assert_eq!(end, Some(DataEnd::TooLarge));
    }

    #[test]
    fn line_length_limit() {
        // RFC 5321 4.5.3.1.6: 1000 octets including CRLF.
        let mut ok = vec![b'x'; 998];
        ok.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(decode(&ok).1, Some(DataEnd::Ok));
        let mut long = vec![b'x'; 999];
        long.extend_from_slice(b"\r\n.\r\nQUIT");
        let (n, end, _) = decode(&long);
        assert_eq!(end, Some(DataEnd::LineTooLong));
        assert_eq!(&long[n..], b"QUIT");
        // The transparency dot is not counted.
        let mut stuffed = vec![b'.'];
        stuffed.extend(vec![b'.'; 998]);
        stuffed.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(decode(&stuffed).1, Some(DataEnd::Ok));
        // A bare LF ends a line for counting too (the stored lines are what matter).
        let mut lf = vec![b'x'; 600];
        lf.push(b'\n');
        lf.extend(vec![b'x'; 600]);
        lf.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(decode(&lf).1, Some(DataEnd::Ok));
    }

    #[test]
    fn split_anywhere_matches_one_shot() {
        let samples: Vec<Vec<u8>> = vec![
            b"Subject: x\r\n\r\n..a\r\n.b\r\n\n.\n\r.\r\r\n.\rx\r\n.\r\nQUIT\r\n".to_vec(),
            b".\r\n".to_vec(),
            b"\r\r\n.\r\n".to_vec(),
            b"a\r\n.\r\r\n.\r\n".to_vec(),
            b"no end at all \r\n.\r".to_vec(),
        ];
        for s in &samples {
            let one = decode_with(s, BIG, 1000);
            let by_byte = decode_split(s, &mut || 1, BIG, 1000);
            assert_eq!(one, by_byte, "{:?}", String::from_utf8_lossy(s));
        }
    }

    #[test]
    fn random_inputs_random_splits() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let alphabet = b"\r\n.ab";
        for round in 0..3000 {
            let len = rng.below(60);
            let mut input: Vec<u8> = (0..len).map(|_| alphabet[rng.below(alphabet.len())]).collect();
            if round % 2 == 0 {
                input.extend_from_slice(b"\r\n.\r\n");
            }
            input.extend_from_slice(b"TAIL");
            let max_size = if round % 5 == 0 { rng.below(40) } else { BIG };
            let max_line = if round % 7 == 0 { 2 + rng.below(10) } else { 1000 };
            let one = decode_with(&input, max_size, max_line);
            let by_byte = decode_split(&input, &mut || 1, max_size, max_line);
            let mut r2 = Rng(round as u64 + 1);
            let random = decode_split(&input, &mut || 1 + r2.below(7), max_size, max_line);
            assert_eq!(one, by_byte);
            assert_eq!(one, random);
            let (n, end, body) = one;
            assert!(no_bare_cr_or_lf(&body));
            assert!(body.len() <= max_size);
            let first_marker = input.windows(5).position(|w| w == b"\r\n.\r\n");
            if end.is_some() {
                // The consumed input ends with CRLF.CRLF, or is exactly ".\r\n".
                let consumed = &input[..n];
                assert!(consumed.ends_with(b"\r\n.\r\n") || consumed == b".\r\n");
                // ... and it is the first occurrence.
                let first = input.windows(5).position(|w| w == b"\r\n.\r\n").map(|p| p + 5);
                if input.starts_with(b".\r\n") {
                    assert_eq!(n, 3);
                } else {
                    assert_eq!(Some(n), first);
                }
            } else {
                assert_eq!(n, input.len());
                assert!(first_marker.is_none() && !input.starts_with(b".\r\n"));
            }
        }
    }

    #[test]
    fn dot_stuff_examples() {
        let mut out = Vec::new();
        dot_stuff(b"", &mut out);
        assert_eq!(out, b".\r\n");
        out.clear();
        dot_stuff(b"abc", &mut out);
        assert_eq!(out, b"abc\r\n.\r\n");
        out.clear();
        dot_stuff(b".\r\n..x\r\nx.\r\n", &mut out);
        assert_eq!(out, b"..\r\n...x\r\nx.\r\n.\r\n");
        out.clear();
        dot_stuff(b"a\n.\nb\r.c\r", &mut out);
        assert_eq!(out, b"a\r\n..\r\nb\r\n..c\r\n.\r\n");
    }

    #[test]
    fn dot_stuff_then_decode_roundtrips() {
        let mut rng = Rng(42);
        let alphabet = b"\r\n.xy";
        for _ in 0..3000 {
            let len = rng.below(40);
            let body: Vec<u8> = (0..len).map(|_| alphabet[rng.below(alphabet.len())]).collect();
            let mut wire = Vec::new();
            dot_stuff(&body, &mut wire);
            let (n, end, decoded) = decode(&wire);
            assert_eq!(n, wire.len(), "{:?}", String::from_utf8_lossy(&body));
            assert_eq!(end, Some(DataEnd::Ok));
            // Decoding gives the normalised body with a final CRLF.
            let mut normal = Vec::new();
            let mut i = 0;
            while i < body.len() {
                match body[i] {
                    b'\r' if body.get(i + 1) == Some(&b'\n') => {
                        normal.extend_from_slice(b"\r\n");
                        i += 1;
                    }
                    b'\r' | b'\n' => normal.extend_from_slice(b"\r\n"),
                    b => normal.push(b),
                }
                i += 1;
            }
            if !normal.is_empty() && !normal.ends_with(b"\r\n") {
                normal.extend_from_slice(b"\r\n");
            }
            assert_eq!(decoded, normal, "{:?}", String::from_utf8_lossy(&body));
            // A decoded (CRLF-clean) body re-stuffs to the same wire form.
            let mut again = Vec::new();
            dot_stuff(&decoded, &mut again);
            assert_eq!(again, wire);
        }
    }
}
