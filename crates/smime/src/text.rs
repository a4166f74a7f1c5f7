//! Text helpers the certificate and message code share: base64 in lines, and finding a
//! marker in a body.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

pub(crate) fn encode_base64_lines(bytes: &[u8], width: usize) -> Vec<String> {
    let text = STANDARD.encode(bytes);
    // Base64 output is ASCII, so every byte offset is a char boundary.
    text.as_bytes().chunks(width).map(|c| String::from_utf8_lossy(c).into_owned()).collect()
}

/// Decodes base64 ignoring whitespace anywhere (line breaks of any width).
pub(crate) fn decode_base64(text: &[u8]) -> std::result::Result<Vec<u8>, base64::DecodeError> {
    let clean: Vec<u8> = text.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    STANDARD.decode(clean)
}

/// The first offset of `needle` in `haystack`.
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
