//! MD5 (RFC 1321) with access to the intermediate chaining state.
//!
//! The `md-5` crate keeps its state private, but the CRAM-MD5 secret (Dovecot's scheme)
//! is exactly the state after absorbing `key ^ ipad` and `key ^ opad`, and checking a
//! response means resuming from it. Only CRAM-MD5 uses this module.

/// RFC 1321 3.3: initial chaining values A, B, C, D.
pub(crate) const IV: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// RFC 1321 3.4: T[i] = floor(2^32 * abs(sin(i + 1))).
const T: [u32; 64] = [
    0xd76a_a478,
    0xe8c7_b756,
    0x2420_70db,
    0xc1bd_ceee,
    0xf57c_0faf,
    0x4787_c62a,
    0xa830_4613,
    0xfd46_9501,
    0x6980_98d8,
    0x8b44_f7af,
    0xffff_5bb1,
    0x895c_d7be,
    0x6b90_1122,
    0xfd98_7193,
    0xa679_438e,
    0x49b4_0821,
    0xf61e_2562,
    0xc040_b340,
    0x265e_5a51,
    0xe9b6_c7aa,
    0xd62f_105d,
    0x0244_1453,
    0xd8a1_e681,
    0xe7d3_fbc8,
    0x21e1_cde6,
    0xc337_07d6,
    0xf4d5_0d87,
    0x455a_14ed,
    0xa9e3_e905,
    0xfcef_a3f8,
    0x676f_02d9,
    0x8d2a_4c8a,
    0xfffa_3942,
    0x8771_f681,
    0x6d9d_6122,
    0xfde5_380c,
    0xa4be_ea44,
    0x4bde_cfa9,
    0xf6bb_4b60,
    0xbebf_bc70,
    0x289b_7ec6,
    0xeaa1_27fa,
    0xd4ef_3085,
    0x0488_1d05,
    0xd9d4_d039,
    0xe6db_99e5,
    0x1fa2_7cf8,
    0xc4ac_5665,
    0xf429_2244,
    0x432a_ff97,
    0xab94_23a7,
    0xfc93_a039,
    0x655b_59c3,
    0x8f0c_cc92,
    0xffef_f47d,
    0x8584_5dd1,
    0x6fa8_7e4f,
    0xfe2c_e6e0,
    0xa301_4314,
    0x4e08_11a1,
    0xf753_7e82,
    0xbd3a_f235,
    0x2ad7_d2bb,
    0xeb86_d391,
];

/// RFC 1321 3.4: per-step left-rotation amounts, by round.
const S: [[u32; 4]; 4] = [[7, 12, 17, 22], [5, 9, 14, 20], [4, 11, 16, 23], [6, 10, 15, 21]];

/// RFC 1321 3.4: processes one 16-word block.
pub(crate) fn compress(state: &mut [u32; 4], block: &[u8; 64]) {
    let mut m = [0u32; 16];
    for (word, bytes) in m.iter_mut().zip(block.chunks_exact(4)) {
        *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    let [mut a, mut b, mut c, mut d] = *state;
    for i in 0..64 {
        let (f, g) = match i / 16 {
            0 => ((b & c) | (!b & d), i),
            1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
            2 => (b ^ c ^ d, (3 * i + 5) % 16),
            _ => (c ^ (b | !d), (7 * i) % 16),
        };
        let rotated = a.wrapping_add(f).wrapping_add(T[i]).wrapping_add(m[g]).rotate_left(S[i / 16][i % 4]);
        a = d;
        d = c;
        c = b;
        b = b.wrapping_add(rotated);
    }
    state[0] = state[0].wrapping_add(a);
    state[1] = state[1].wrapping_add(b);
    state[2] = state[2].wrapping_add(c);
    state[3] = state[3].wrapping_add(d);
}

/// Finishes an MD5 computation whose first `prefix_len` bytes (a multiple of 64) have
/// already been absorbed into `state`, by absorbing `data` and padding (RFC 1321 3.1, 3.2).
pub(crate) fn finish_from(mut state: [u32; 4], prefix_len: u64, data: &[u8]) -> [u8; 16] {
    let mut blocks = data.chunks_exact(64);
    for block in &mut blocks {
        let mut buf = [0u8; 64];
        buf.copy_from_slice(block);
        compress(&mut state, &buf);
    }
    let rest = blocks.remainder();
    let bit_len = prefix_len.wrapping_add(data.len() as u64).wrapping_mul(8);
    let mut tail = [0u8; 128];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let total = if rest.len() < 56 { 64 } else { 128 };
    tail[total - 8..total].copy_from_slice(&bit_len.to_le_bytes());
    for block in tail[..total].chunks_exact(64) {
        let mut buf = [0u8; 64];
        buf.copy_from_slice(block);
        compress(&mut state, &buf);
    }
    let mut out = [0u8; 16];
    for (bytes, word) in out.chunks_exact_mut(4).zip(state) {
        bytes.copy_from_slice(&word.to_le_bytes());
    }
    out
}

/// Plain MD5 of `data`.
#[cfg(test)]
pub(crate) fn digest(data: &[u8]) -> [u8; 16] {
    finish_from(IV, 0, data)
}

/// HMAC-MD5 (RFC 2104) states after absorbing `key ^ opad` and `key ^ ipad`, in that order
/// (Dovecot's CRAM-MD5 context order).
pub(crate) fn hmac_states(key: &[u8]) -> ([u32; 4], [u32; 4]) {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        // RFC 2104 2: keys longer than B are hashed first.
        k[..16].copy_from_slice(&finish_from(IV, 0, key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut ipad = [0u8; 64];
    let mut opad = [0u8; 64];
    for ((i, o), kb) in ipad.iter_mut().zip(opad.iter_mut()).zip(k) {
        *i = kb ^ 0x36;
        *o = kb ^ 0x5c;
    }
    let mut inner = IV;
    compress(&mut inner, &ipad);
    let mut outer = IV;
    compress(&mut outer, &opad);
    (outer, inner)
}

/// HMAC-MD5 of `message`, resumed from precomputed outer and inner states (RFC 2104 2).
pub(crate) fn hmac_from_states(outer: [u32; 4], inner: [u32; 4], message: &[u8]) -> [u8; 16] {
    let inner_hash = finish_from(inner, 64, message);
    finish_from(outer, 64, &inner_hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use md5::{Digest, Md5};

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn rfc1321_test_suite() {
        // RFC 1321 A.5
        let vectors: [(&str, &str); 7] = [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            ("abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"),
            ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "d174ab98d277d9f5a5611c2c9f419d9f"),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        for (input, expected) in vectors {
            assert_eq!(hex(&digest(input.as_bytes())), expected, "MD5({input:?})");
        }
    }

    #[test]
    fn agrees_with_md5_crate_at_block_edges() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 200, 300] {
            let expected = Md5::digest(&data[..len]);
            assert_eq!(digest(&data[..len])[..], expected[..], "len {len}");
        }
    }

    #[test]
    fn hmac_from_states_matches_hmac_crate() {
        for key in [&b"tanstaaftanstaaf"[..], &[0x42u8; 64][..], &[0x17u8; 100][..], b""] {
            let (outer, inner) = hmac_states(key);
            for msg in [&b"<1896.697170952@postoffice.reston.mci.net>"[..], &[9u8; 150][..]] {
                let mut mac = Hmac::<Md5>::new_from_slice(key).unwrap();
                mac.update(msg);
                let expected = mac.finalize().into_bytes();
                assert_eq!(hmac_from_states(outer, inner, msg)[..], expected[..]);
            }
        }
    }
}
