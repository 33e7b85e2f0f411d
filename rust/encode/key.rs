//! Entity keys as bytes: type-tagged, length-prefixed, order-preserving, prefix-free.
//!
//! A key is a tuple of parts (one per key column), each an integer or a string. Each
//! part is written as one tag byte followed by its payload; the tag says the type *and*
//! the payload's length, so a decoder always knows where a part ends:
//!
//! | part            | tag            | payload                                        |
//! |-----------------|----------------|------------------------------------------------|
//! | integer 0       | `0x20`         | none                                           |
//! | integer v > 0   | `0x20 + n`     | v big-endian in its n = 1..=8 significant bytes |
//! | integer v < 0   | `0x20 - n`     | ones' complement of \|v\| in n = 1..=8 bytes      |
//! | string s        | `0x40 + n`     | len(s) big-endian in n = 0..=4 bytes, then s     |
//!
//! Integers of any Arrow width and signedness are encoded by *value* (`Int32` 7 and
//! `UInt64` 7 are the same key, as in the join), covering `i64::MIN..=u64::MAX`.
//!
//! **Order.** Comparing two encodings bytewise (what LMDB does) compares the tuples
//! part by part: integers before strings, integers by value (a longer positive payload
//! has a larger tag, a longer negative one a smaller tag; within a length the payload
//! is big-endian, complemented for negatives), strings by length and then by bytes
//! ("shortlex": the price of the length prefix, which keeps every part self-delimiting),
//! and a tuple before any longer tuple it is a prefix of. The store relies on exactly
//! this: sorting request keys by their encodings visits the B-tree in its own order,
//! and nearby integer ids sit on nearby pages.
//!
//! **No collisions.** Every part is self-delimiting and every value has exactly one
//! encoding (payloads are minimal; [`decode`] rejects anything else), so the encoding
//! of a tuple is never a proper prefix of another tuple's: `(1, 23)` and `(12, 3)`, or
//! `("ab", "c")` and `("a", "bc")`, are different bytes. The store appends a 4-byte
//! table id to the entity encoding; prefix-freeness is what makes "the key starts with
//! this entity and is 4 bytes longer" an exact test.
//!
//! Cost: one pass, 1-9 bytes per integer, 1-5 bytes plus the bytes per string.

use std::cmp::Ordering;

const INT_ZERO: u8 = 0x20;
const STR_BASE: u8 = 0x40;

/// LMDB's largest key (bytes), compile-time constant of the C library.
pub const MAX_KEY_LEN: usize = 511;
/// Bytes the store appends to an entity key (the table id, big-endian u32).
pub const TABLE_ID_LEN: usize = 4;
/// The largest encoded entity key.
pub const MAX_ENTITY_LEN: usize = MAX_KEY_LEN - TABLE_ID_LEN;

/// One decoded key part; integers are widened to `i128` so that every Arrow integer
/// fits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Part<'a> {
    Int(i128),
    Str(&'a [u8]),
}

impl Ord for Part<'_> {
    /// The order the encoding preserves: integers by value, before strings; strings by
    /// length, then bytes.
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Part::Int(a), Part::Int(b)) => a.cmp(b),
            (Part::Int(_), Part::Str(_)) => Ordering::Less,
            (Part::Str(_), Part::Int(_)) => Ordering::Greater,
            (Part::Str(a), Part::Str(b)) => a.len().cmp(&b.len()).then_with(|| a.cmp(b)),
        }
    }
}

impl PartialOrd for Part<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The encoding of integer `v` (tag and payload) in a small array: (bytes, length).
/// The caller guarantees `i64::MIN <= v <= u64::MAX` (every Arrow integer is).
#[inline]
pub fn int_bytes(v: i128) -> ([u8; 9], usize) {
    debug_assert!(v >= i64::MIN as i128 && v <= u64::MAX as i128);
    let mut out = [0u8; 9];
    if v == 0 {
        out[0] = INT_ZERO;
        return (out, 1);
    }
    let (mag, neg) = if v > 0 {
        (v as u64, false)
    } else {
        ((-v) as u64, true)
    };
    let n = 8 - (mag.leading_zeros() / 8) as usize;
    let payload = if neg { !mag } else { mag };
    out[0] = if neg {
        INT_ZERO - n as u8
    } else {
        INT_ZERO + n as u8
    };
    out[1..1 + n].copy_from_slice(&payload.to_be_bytes()[8 - n..]);
    (out, 1 + n)
}

/// The tag and length prefix of a string of `len` bytes: (bytes, length). The caller
/// guarantees `len < 2^32` (keys are far shorter: see [`MAX_ENTITY_LEN`]).
#[inline]
pub fn str_header(len: usize) -> ([u8; 5], usize) {
    let len = len as u32;
    let n = 4 - (len.leading_zeros() / 8) as usize;
    let mut out = [0u8; 5];
    out[0] = STR_BASE + n as u8;
    out[1..1 + n].copy_from_slice(&len.to_be_bytes()[4 - n..]);
    (out, 1 + n)
}

/// Appends integer `v` (see [`int_bytes`] for the range).
#[inline]
pub fn push_int(out: &mut Vec<u8>, v: i128) {
    let (b, n) = int_bytes(v);
    out.extend_from_slice(&b[..n]);
}

/// Appends an `i64` (the common case).
#[inline]
pub fn push_i64(out: &mut Vec<u8>, v: i64) {
    push_int(out, v as i128)
}

/// Appends string (or any byte string) `s`.
#[inline]
pub fn push_str(out: &mut Vec<u8>, s: &[u8]) {
    let (h, n) = str_header(s.len());
    out.extend_from_slice(&h[..n]);
    out.extend_from_slice(s);
}

/// Appends one part.
pub fn push_part(out: &mut Vec<u8>, part: &Part<'_>) {
    match part {
        Part::Int(v) => push_int(out, *v),
        Part::Str(s) => push_str(out, s),
    }
}

/// The encoding of a whole tuple.
pub fn encode(parts: &[Part<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        push_part(&mut out, p);
    }
    out
}

/// Why some bytes are not a key encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyDecodeError {
    /// The bytes end inside a part.
    Truncated,
    /// A byte that is no part's tag.
    BadTag(u8),
    /// A payload that is not the shortest one for its value (a second encoding).
    NotCanonical,
    /// A negative integer below `i64::MIN`.
    OutOfRange,
}

/// Decodes one part at the start of `bytes`: the part and its encoded length.
pub fn decode_part(bytes: &[u8]) -> Result<(Part<'_>, usize), KeyDecodeError> {
    let (&tag, rest) = bytes.split_first().ok_or(KeyDecodeError::Truncated)?;
    match tag {
        INT_ZERO => Ok((Part::Int(0), 1)),
        0x21..=0x28 => {
            let n = (tag - INT_ZERO) as usize;
            let payload = rest.get(..n).ok_or(KeyDecodeError::Truncated)?;
            if payload[0] == 0 {
                return Err(KeyDecodeError::NotCanonical);
            }
            let mut be = [0u8; 8];
            be[8 - n..].copy_from_slice(payload);
            Ok((Part::Int(u64::from_be_bytes(be) as i128), 1 + n))
        }
        0x18..=0x1F => {
            let n = (INT_ZERO - tag) as usize;
            let payload = rest.get(..n).ok_or(KeyDecodeError::Truncated)?;
            if payload[0] == 0xFF {
                return Err(KeyDecodeError::NotCanonical);
            }
            let mut be = [0xFFu8; 8];
            be[8 - n..].copy_from_slice(payload);
            let mag = !u64::from_be_bytes(be);
            if mag > 1u64 << 63 {
                return Err(KeyDecodeError::OutOfRange);
            }
            Ok((Part::Int(-(mag as i128)), 1 + n))
        }
        0x40..=0x44 => {
            let n = (tag - STR_BASE) as usize;
            let len_bytes = rest.get(..n).ok_or(KeyDecodeError::Truncated)?;
            if n > 0 && len_bytes[0] == 0 {
                return Err(KeyDecodeError::NotCanonical);
            }
            let mut be = [0u8; 4];
            be[4 - n..].copy_from_slice(len_bytes);
            let len = u32::from_be_bytes(be) as usize;
            let s = rest
                .get(n..)
                .and_then(|r| r.get(..len))
                .ok_or(KeyDecodeError::Truncated)?;
            Ok((Part::Str(s), 1 + n + len))
        }
        t => Err(KeyDecodeError::BadTag(t)),
    }
}

/// Decodes a whole tuple; every byte must belong to a part.
pub fn decode(mut bytes: &[u8]) -> Result<Vec<Part<'_>>, KeyDecodeError> {
    let mut parts = Vec::new();
    while !bytes.is_empty() {
        let (p, used) = decode_part(bytes)?;
        parts.push(p);
        bytes = &bytes[used..];
    }
    Ok(parts)
}

/// Appends the table id to an entity encoding: the LMDB key of one row.
#[inline]
pub fn push_table_id(out: &mut Vec<u8>, table_id: u32) {
    out.extend_from_slice(&table_id.to_be_bytes());
}

/// Splits an LMDB row key into (entity encoding, table id); None if it is too short.
#[inline]
pub fn split_row_key(key: &[u8]) -> Option<(&[u8], u32)> {
    let at = key.len().checked_sub(TABLE_ID_LEN)?;
    let (entity, tid) = key.split_at(at);
    Some((entity, u32::from_be_bytes(tid.try_into().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn int_strategy() -> impl Strategy<Value = i128> {
        prop_oneof![
            any::<i64>().prop_map(|v| v as i128),
            any::<u64>().prop_map(|v| v as i128),
            (-300i128..300),
            Just(i64::MIN as i128),
            Just(u64::MAX as i128),
            (0u32..64).prop_map(|s| 1i128 << s),
            (0u32..64).prop_map(|s| -(1i128 << s)),
        ]
    }

    #[derive(Clone, Debug)]
    enum Owned {
        Int(i128),
        Str(Vec<u8>),
    }

    impl Owned {
        fn part(&self) -> Part<'_> {
            match self {
                Owned::Int(v) => Part::Int(*v),
                Owned::Str(s) => Part::Str(s),
            }
        }
    }

    fn part_strategy() -> impl Strategy<Value = Owned> {
        prop_oneof![
            int_strategy().prop_map(Owned::Int),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Owned::Str),
            proptest::collection::vec(0u8..3, 0..4).prop_map(Owned::Str),
        ]
    }

    fn tuple_strategy() -> impl Strategy<Value = Vec<Owned>> {
        proptest::collection::vec(part_strategy(), 0..4)
    }

    fn parts(t: &[Owned]) -> Vec<Part<'_>> {
        t.iter().map(Owned::part).collect()
    }

    #[test]
    fn known_encodings() {
        assert_eq!(encode(&[Part::Int(0)]), [0x20]);
        assert_eq!(encode(&[Part::Int(1)]), [0x21, 1]);
        assert_eq!(encode(&[Part::Int(256)]), [0x22, 1, 0]);
        assert_eq!(encode(&[Part::Int(-1)]), [0x1F, 0xFE]);
        assert_eq!(encode(&[Part::Int(-256)]), [0x1E, 0xFE, 0xFF]);
        assert_eq!(encode(&[Part::Str(b"")]), [0x40]);
        assert_eq!(encode(&[Part::Str(b"ab")]), [0x41, 2, b'a', b'b']);
        let min = encode(&[Part::Int(i64::MIN as i128)]);
        assert_eq!(min, [0x18, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
    }

    #[test]
    fn composite_keys_do_not_collide() {
        let a = encode(&[Part::Int(1), Part::Int(23)]);
        let b = encode(&[Part::Int(12), Part::Int(3)]);
        assert_ne!(a, b);
        let a = encode(&[Part::Str(b"ab"), Part::Str(b"c")]);
        let b = encode(&[Part::Str(b"a"), Part::Str(b"bc")]);
        assert_ne!(a, b);
        // An integer and a string with the same bytes differ by tag.
        assert_ne!(encode(&[Part::Int(0x61)]), encode(&[Part::Str(b"a")]));
    }

    #[test]
    fn table_id_split() {
        let mut k = encode(&[Part::Int(7)]);
        push_table_id(&mut k, 0x01020304);
        assert_eq!(split_row_key(&k), Some((&[0x21, 7][..], 0x01020304)));
        assert_eq!(split_row_key(&[1, 2]), None);
    }

    proptest! {
        #[test]
        fn round_trip(t in tuple_strategy()) {
            let p = parts(&t);
            let bytes = encode(&p);
            prop_assert_eq!(decode(&bytes).unwrap(), p);
        }

        #[test]
        fn byte_order_is_tuple_order(a in tuple_strategy(), b in tuple_strategy()) {
            let (pa, pb) = (parts(&a), parts(&b));
            prop_assert_eq!(encode(&pa).cmp(&encode(&pb)), pa.cmp(&pb));
        }

        #[test]
        fn equal_bytes_only_for_equal_tuples(a in tuple_strategy(), b in tuple_strategy()) {
            let (pa, pb) = (parts(&a), parts(&b));
            prop_assert_eq!(encode(&pa) == encode(&pb), pa == pb);
        }

        #[test]
        fn no_encoding_is_a_prefix_of_another(a in tuple_strategy(), b in tuple_strategy()) {
            let (ea, eb) = (encode(&parts(&a)), encode(&parts(&b)));
            // Only the empty tuple (and a tuple's own prefixes as tuples) may be prefixes:
            // a prefix in bytes must be a prefix in parts.
            if eb.len() > ea.len() && eb.starts_with(&ea) {
                let (da, db) = (decode(&ea).unwrap(), decode(&eb).unwrap());
                prop_assert_eq!(&db[..da.len()], &da[..]);
            }
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(p) = decode(&bytes) {
                // Whatever decodes is canonical: it encodes back to the same bytes.
                prop_assert_eq!(encode(&p), bytes);
            }
        }

        #[test]
        fn integer_widths_meet_by_value(v in any::<i32>()) {
            prop_assert_eq!(encode(&[Part::Int(v as i128)]), encode(&[Part::Int(v as i64 as i128)]));
            let mut a = Vec::new();
            push_i64(&mut a, v as i64);
            prop_assert_eq!(a, encode(&[Part::Int(v as i128)]));
        }
    }
}
