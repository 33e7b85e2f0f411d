//! CRC-32C (Castagnoli), the checksum of every stored row ([`super::row`]).
//!
//! Why CRC-32C: it detects every burst error up to 32 bits and every odd number of
//! flipped bits, misses other random damage with probability 2^-32, and x86-64 has
//! an instruction for it (SSE4.2 `crc32`, 8 bytes per instruction). Rows are short
//! (~100 bytes), so what matters is the cost per call, not the throughput on long
//! buffers: the hardware path reads 8 unaligned bytes at a time in one dependent
//! chain (3 cycles per word, ~40 cycles for a 20-float row plus its key) with no
//! alignment prologue, and finishes with at most one 4-, one 2- and one 1-byte step.
//! Without SSE4.2 (or on another architecture) a byte-at-a-time table lookup gives
//! the same values, ~5x slower. Long values (aggregation states of busy entities,
//! megabytes) run three chains over consecutive 4 KiB pieces and join them with a
//! precomputed "append 4 KiB of zeros" table: ~3x the throughput of one chain.
//!
//! [`crc32c_append`] continues a CRC over more bytes: `append(append(0, a), b)` is
//! the CRC of `a ++ b`, so a row's key and value are checksummed without being
//! copied next to each other.

/// The CRC-32C of `data` continued from `crc` (the CRC of the bytes before it; 0 for
/// none). Standard CRC-32C: `crc32c_append(0, b"123456789") == 0xE306_9283`.
#[inline]
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU supports SSE4.2, the only feature `hardware` enables.
            return unsafe { hardware(crc, data) };
        }
    }
    software(crc, data)
}

/// The CRC-32C of the concatenation of `parts` (one feature check and one call for
/// all of them: what a row's checksum costs is mostly per call, its bytes are few).
#[inline]
pub fn crc32c_parts(parts: &[&[u8]]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU supports SSE4.2, the only feature `hardware_parts` enables.
            return unsafe { hardware_parts(parts) };
        }
    }
    parts.iter().fold(0, |c, p| software(c, p))
}

/// The CRC-32C of every [`SEGMENT`]-byte piece of `data` (the last may be shorter),
/// into `out` (one entry per piece): the segment checksums of large rows
/// ([`super::segments`]). Three pieces run as three interleaved chains, so a whole
/// value is checksummed at the throughput of [`crc32c_append`] on long inputs, with
/// no joining step.
pub fn crc32c_segments(data: &[u8], out: &mut [u32]) {
    assert_eq!(
        out.len(),
        data.len().div_ceil(SEGMENT),
        "one CRC per segment"
    );
    let mut pieces = data.chunks(SEGMENT).zip(out.iter_mut());
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("sse4.2") {
            let full = data.len() / SEGMENT / 3 * 3;
            for _ in 0..full / 3 {
                let (a, oa) = pieces.next().expect("a piece");
                let (b, ob) = pieces.next().expect("a piece");
                let (d, od) = pieces.next().expect("a piece");
                // SAFETY: the CPU supports SSE4.2, the only feature `three` enables.
                (*oa, *ob, *od) = unsafe { three(a, b, d) };
            }
        }
    }
    for (piece, o) in pieces {
        *o = crc32c_append(0, piece);
    }
}

/// Bytes per segment of [`crc32c_segments`] (and per chain of the long-input loop).
pub const SEGMENT: usize = STREAM;

/// The CRC-32C of three [`STREAM`]-byte pieces, computed as three interleaved chains.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn three(a: &[u8], b: &[u8], d: &[u8]) -> (u32, u32, u32) {
    use std::arch::x86_64::_mm_crc32_u64;
    let word = |b: &[u8], i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8"));
    let (a, b, d) = (&a[..STREAM], &b[..STREAM], &d[..STREAM]);
    let (mut r0, mut r1, mut r2) = (u64::from(!0u32), u64::from(!0u32), u64::from(!0u32));
    for i in 0..STREAM / 8 {
        r0 = _mm_crc32_u64(r0, word(a, i));
        r1 = _mm_crc32_u64(r1, word(b, i));
        r2 = _mm_crc32_u64(r2, word(d, i));
    }
    (!(r0 as u32), !(r1 as u32), !(r2 as u32))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn hardware_parts(parts: &[&[u8]]) -> u32 {
    let mut c = 0;
    for p in parts {
        c = hardware(c, p);
    }
    c
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
#[inline]
fn hardware(crc: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u16, _mm_crc32_u32, _mm_crc32_u64, _mm_crc32_u8};
    let mut c = u64::from(!crc);
    let mut data = data;
    if data.len() >= 3 * STREAM {
        // Three independent chains hide the instruction's 3-cycle latency (one word per
        // cycle instead of one per three); the chains are joined by shifting a
        // register over the bytes that follow it (a table lookup per byte of it).
        let tab = zeros_table();
        let word =
            |b: &[u8], i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8"));
        while data.len() >= 3 * STREAM {
            let (a, rest) = data.split_at(STREAM);
            let (b, rest) = rest.split_at(STREAM);
            let (d, rest) = rest.split_at(STREAM);
            let (mut r0, mut r1, mut r2) = (c, 0u64, 0u64);
            for i in 0..STREAM / 8 {
                r0 = _mm_crc32_u64(r0, word(a, i));
                r1 = _mm_crc32_u64(r1, word(b, i));
                r2 = _mm_crc32_u64(r2, word(d, i));
            }
            let joined = shift(tab, shift(tab, r0 as u32) ^ r1 as u32) ^ r2 as u32;
            c = u64::from(joined);
            data = rest;
        }
    }
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        c = _mm_crc32_u64(c, u64::from_le_bytes(w.try_into().expect("8 bytes")));
    }
    let mut c = c as u32;
    let mut rest = words.remainder();
    if rest.len() >= 4 {
        c = _mm_crc32_u32(
            c,
            u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")),
        );
        rest = &rest[4..];
    }
    if rest.len() >= 2 {
        c = _mm_crc32_u16(
            c,
            u16::from_le_bytes(rest[..2].try_into().expect("2 bytes")),
        );
        rest = &rest[2..];
    }
    if let Some(&b) = rest.first() {
        c = _mm_crc32_u8(c, b);
    }
    !c
}

/// Bytes per chain in the three-chain loop of long inputs.
const STREAM: usize = 4096;

/// `tab[k][b]`: the CRC register after `STREAM` zero bytes from register `b << 8k`.
/// Appending zeros is linear in the register, so the 4 × 256 entries come from the 32
/// single-bit registers (computed once, ~130k table steps).
fn zeros_table() -> &'static [[u32; 256]; 4] {
    static TAB: std::sync::OnceLock<Box<[[u32; 256]; 4]>> = std::sync::OnceLock::new();
    TAB.get_or_init(|| {
        let zeros = |mut r: u32| {
            for _ in 0..STREAM {
                r = TABLE[(r & 0xFF) as usize] ^ (r >> 8);
            }
            r
        };
        let bit: Vec<u32> = (0..32).map(|i| zeros(1 << i)).collect();
        let mut tab = Box::new([[0u32; 256]; 4]);
        for (k, row) in tab.iter_mut().enumerate() {
            for (b, slot) in row.iter_mut().enumerate() {
                *slot = (0..8)
                    .filter(|i| b & (1 << i) != 0)
                    .fold(0, |x, i| x ^ bit[8 * k + i]);
            }
        }
        tab
    })
}

/// The register `r` after `STREAM` zero bytes.
#[inline]
fn shift(tab: &[[u32; 256]; 4], r: u32) -> u32 {
    tab[0][(r & 0xFF) as usize]
        ^ tab[1][((r >> 8) & 0xFF) as usize]
        ^ tab[2][((r >> 16) & 0xFF) as usize]
        ^ tab[3][(r >> 24) as usize]
}

/// The reflected Castagnoli polynomial.
const POLY: u32 = 0x82F6_3B78;

const TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

fn software(crc: u32, data: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in data {
        c = TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_each_pieces_crc() {
        let data: Vec<u8> = (0..60_000u32).map(|i| (i * 13 + i / 11) as u8).collect();
        for len in [
            0,
            1,
            4095,
            4096,
            4097,
            12_288,
            12_289,
            3 * 4096 * 2 + 5,
            60_000,
        ] {
            let d = &data[..len];
            let mut out = vec![0; len.div_ceil(SEGMENT)];
            crc32c_segments(d, &mut out);
            let want: Vec<u32> = d.chunks(SEGMENT).map(|p| software(0, p)).collect();
            assert_eq!(out, want, "length {len}");
        }
    }

    #[test]
    fn known_values_and_appending() {
        assert_eq!(crc32c_append(0, b"123456789"), 0xE306_9283);
        assert_eq!(software(0, b"123456789"), 0xE306_9283);
        assert_eq!(crc32c_append(0, b""), 0);
        let long: Vec<u8> = (0..40_000u32).map(|i| (i * 31 + i / 7) as u8).collect();
        for cut in [0, 12_287, 12_288, 12_289, 24_576 + 5, 40_000] {
            assert_eq!(
                crc32c_append(7, &long[..cut]),
                software(7, &long[..cut]),
                "{cut}"
            );
        }
        let data: Vec<u8> = (0..200u32).map(|i| (i * 7 + 3) as u8).collect();
        for cut in 0..data.len() {
            let whole = crc32c_append(0, &data[..cut]);
            assert_eq!(whole, software(0, &data[..cut]), "length {cut}");
            for split in [0, cut / 3, cut / 2, cut] {
                let a = crc32c_append(0, &data[..split]);
                assert_eq!(crc32c_append(a, &data[split..cut]), whole);
                assert_eq!(crc32c_parts(&[&data[..split], &data[split..cut]]), whole);
                assert_eq!(
                    crc32c_parts(&[&data[..split], &[], &data[split..cut]]),
                    whole
                );
            }
        }
    }
}
