//! JSON text written straight from stored rows: a selection's values go into one
//! buffer per request (spans per entity and output), so a JSON response costs no
//! Arrow arrays. Floats are written as the shortest text that reads back to the same
//! value of the stored width (`zmij`, serde_json's own), non-finite ones as null.

use super::lookup::Part;
use crate::encode::row::{RowView, ValueType};

/// A selection's values written as JSON straight from the stored rows (no Arrow
/// arrays: one buffer per selection instead of an allocation per feature).
pub struct Text {
    /// Per output: its position in the response.
    pub positions: Vec<usize>,
    pub buf: String,
    /// Per (entity, output), row-major: the value's range in `buf`.
    pub spans: Vec<(u32, u32)>,
}

impl Part {
    /// The response positions of this part's outputs, in its column order.
    pub fn positions(&self) -> Vec<usize> {
        match &self.text {
            Some(t) => t.positions.clone(),
            None => self.columns.iter().map(|(p, _)| *p).collect(),
        }
    }

    /// Appends the JSON of output `c` of entity `r`.
    pub fn write(&self, out: &mut String, c: usize, r: usize) {
        match &self.text {
            Some(t) => {
                let (a, b) = t.spans[r * t.positions.len() + c];
                out.push_str(&t.buf[a as usize..b as usize]);
            }
            None => super::respond::write_value(out, self.columns[c].1.as_ref(), r),
        }
    }
}

/// Whether a stored type is written as JSON by [`cell`] (else through Arrow).
pub fn simple(t: ValueType) -> bool {
    !matches!(
        t,
        ValueType::Date32 | ValueType::Date64 | ValueType::Timestamp(_) | ValueType::Binary
    )
}

/// A float as JSON: the shortest text that reads back to the same float (of the
/// stored width), null when not finite.
pub fn float(out: &mut String, v: f64, single: bool) {
    let mut b = zmij::Buffer::new();
    if !v.is_finite() {
        out.push_str("null");
    } else if single {
        out.push_str(b.format_finite(v as f32));
    } else {
        out.push_str(b.format_finite(v));
    }
}

/// Appends column `col` of `row` as JSON (a [`simple`] type, not null).
pub fn cell(out: &mut String, row: &RowView, col: usize, t: ValueType) {
    use std::fmt::Write;
    let v = row.value(col);
    macro_rules! int {
        ($t:ty) => {{
            let _ = write!(out, "{}", <$t>::from_le_bytes(v.try_into().expect("width")));
        }};
    }
    match t {
        ValueType::Bool => out.push_str(if v[0] != 0 { "true" } else { "false" }),
        ValueType::I8 => int!(i8),
        ValueType::U8 => int!(u8),
        ValueType::I16 => int!(i16),
        ValueType::U16 => int!(u16),
        ValueType::I32 => int!(i32),
        ValueType::U32 => int!(u32),
        ValueType::I64 => int!(i64),
        ValueType::U64 => int!(u64),
        ValueType::F32 => float(
            out,
            f32::from_le_bytes(v.try_into().expect("4")) as f64,
            true,
        ),
        ValueType::F64 => float(out, f64::from_le_bytes(v.try_into().expect("8")), false),
        ValueType::Utf8 => super::respond::push_str(out, &String::from_utf8_lossy(v)),
        _ => out.push_str("null"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn floats_read_back_exactly() {
        for v in [0.1f32, 1.0, -2.5e-8, 3.4e38, 123_456.79, f32::MIN_POSITIVE] {
            let mut out = String::new();
            super::float(&mut out, v as f64, true);
            assert_eq!(out.parse::<f32>().unwrap(), v, "{out}");
        }
        for v in [0.1f64, 1e300, -7.25] {
            let mut out = String::new();
            super::float(&mut out, v, false);
            assert_eq!(out.parse::<f64>().unwrap(), v, "{out}");
        }
        let mut out = String::new();
        super::float(&mut out, f64::NAN, true);
        super::float(&mut out, f64::INFINITY, false);
        assert_eq!(out, "nullnull");
    }
}
