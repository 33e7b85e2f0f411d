//! One array from a byte-array feature column's chunks (Utf8, Binary and their large
//! forms), for the string gathers that follow ([`super::take`]), which read it at
//! random: two dependent reads per value, offsets then bytes.
//!
//! Arrow's `concat` copies into heap buffers on 4 KiB pages, where each of those random
//! reads into a column of several MB likely misses the TLB. Here the offsets (rebased
//! chunk by chunk) and the bytes (copied once) go into buffers of their own on huge
//! pages ([`crate::huge::buffer`], 4 MiB and up), freed whole with the copy. Cost: one
//! sequential copy of the column. Chunks with nulls or of other types return None and
//! the caller uses `concat`. (Null-free fixed-width columns have their own copy,
//! `gather::concat_fixed`: on huge pages only from 32 MiB, since at 8 MB the numeric
//! take measured no faster on them.)

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{BinaryType, ByteArrayType, LargeBinaryType, LargeUtf8Type, Utf8Type};
use arrow_array::{Array, ArrayRef, GenericByteArray};
use arrow_buffer::{ArrowNativeType, OffsetBuffer, ScalarBuffer};
use arrow_schema::DataType;

/// The chunks as one array, or None for a type or layout handled by `concat`.
pub fn concat(chunks: &[&dyn Array]) -> Option<ArrayRef> {
    let dt = chunks.first()?.data_type();
    if chunks.iter().any(|c| c.data_type() != dt) {
        return None;
    }
    match dt {
        DataType::Utf8 => bytes::<Utf8Type>(chunks),
        DataType::LargeUtf8 => bytes::<LargeUtf8Type>(chunks),
        DataType::Binary => bytes::<BinaryType>(chunks),
        DataType::LargeBinary => bytes::<LargeBinaryType>(chunks),
        _ => None,
    }
}

/// Null-free chunks of a byte array type: each chunk's offsets shifted to where its
/// bytes land in the one data buffer.
fn bytes<T: ByteArrayType>(chunks: &[&dyn Array]) -> Option<ArrayRef> {
    if chunks.iter().any(|c| c.null_count() > 0) {
        return None;
    }
    let arrays: Vec<&GenericByteArray<T>> = chunks.iter().map(|c| c.as_bytes::<T>()).collect();
    // Each chunk's bytes: the slice its offsets cover (a sliced array starts past 0).
    let parts: Vec<&[u8]> = arrays
        .iter()
        .map(|a| {
            let o = a.value_offsets();
            &a.value_data()[o[0].as_usize()..o[a.len()].as_usize()]
        })
        .collect();
    let total_bytes: usize = parts.iter().map(|p| p.len()).sum();
    T::Offset::from_usize(total_bytes)?; // too large for the offset type: `concat` errs
    let len: usize = arrays.iter().map(|a| a.len()).sum();
    let width = std::mem::size_of::<T::Offset>();
    let offsets = crate::huge::buffer((len + 1) * width, |out| {
        // SAFETY: T::Offset is i32 or i64, plain integers for which any bytes are a
        // valid value; `out` holds `len + 1` of them (its alignment: the buffer is
        // 2 MiB-aligned when mapped, from the allocator's 16-byte alignment otherwise,
        // checked by `align_to_mut` leaving no prefix).
        let (pre, out, _) = unsafe { out.align_to_mut::<T::Offset>() };
        assert!(pre.is_empty() && out.len() == len + 1);
        let mut at = 0;
        let mut base = 0usize;
        for a in &arrays {
            let o = a.value_offsets();
            let first = o[0].as_usize();
            for (dst, &x) in out[at..at + a.len()].iter_mut().zip(o) {
                *dst = T::Offset::usize_as(x.as_usize() - first + base);
            }
            at += a.len();
            base += o[a.len()].as_usize() - first;
        }
        out[len] = T::Offset::usize_as(base);
    });
    let values = crate::huge::buffer(total_bytes, |out| {
        let mut at = 0;
        for p in &parts {
            out[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
    });
    // SAFETY: the offsets start at 0, never decrease (each chunk's own offsets do not,
    // shifted by the bytes before it) and end at the data's length, which fits the
    // offset type (checked above); the data is the chunks' values byte for byte, each
    // value whole, so valid UTF-8 for Utf8 chunks. No nulls (checked above).
    let array = unsafe {
        let offsets = OffsetBuffer::new_unchecked(ScalarBuffer::new(offsets, 0, len + 1));
        GenericByteArray::<T>::new_unchecked(offsets, values, None)
    };
    Some(Arc::new(array))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{LargeBinaryArray, StringArray};

    fn check(chunks: Vec<ArrayRef>) {
        let refs: Vec<&dyn Array> = chunks.iter().map(|c| c.as_ref()).collect();
        let got = concat(&refs).expect("handled");
        got.to_data().validate_full().unwrap();
        let want = arrow_select::concat::concat(&refs).unwrap();
        assert_eq!(got.to_data(), want.to_data());
    }

    #[test]
    fn matches_arrow_concat() {
        let s: ArrayRef = Arc::new(StringArray::from(vec!["a", "", "h\u{e9}llo", "xyz", "q"]));
        check(vec![s.slice(1, 3), s.clone(), s.slice(5, 0), s.slice(0, 2)]);
        let b: ArrayRef = Arc::new(LargeBinaryArray::from(vec![&b"ab"[..], b"", b"c"]));
        check(vec![b.slice(1, 2), b.clone()]);
        // Large enough for the huge-page mapping.
        let many: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..600_000).map(|i| format!("value {i}")),
        ));
        check(vec![many.clone(), many.slice(3, 1000)]);
    }

    #[test]
    fn declines_nulls_in_byte_arrays() {
        let s: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), None]));
        assert!(concat(&[s.as_ref(), s.as_ref()]).is_none());
    }
}
