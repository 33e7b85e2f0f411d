//! Table definitions: the registered schema of each table (a feature group version),
//! stored in the environment's `meta` database next to the rows they describe, so a
//! definition and the rows written with it commit in the same transaction.
//!
//! `meta` holds:
//! - `format` -> `b"pitstop-online"` + u32 LE format version: marks the environment as
//!   a pitstop online store (anything else is refused);
//! - `next_table_id` -> u32 LE: the id the next new table gets;
//! - `table/<name>` -> a definition in the compact binary form of [`TableDef::encode`],
//!   ending with a CRC-32C of the name and the definition (a damaged definition would
//!   otherwise misread every row of its table);
//! - `catalog_version` -> u64 LE, bumped when a table is dropped, so that every process
//!   notices (in the same read transaction as its lookups) that its cached definitions
//!   are stale;
//! - `mark/<name>` -> i64 LE, the table's *watermark*: the last offline (Delta)
//!   version whose rows the table holds, written in the same transaction as those rows.
//!   Progress lives with the data it describes, so a kill anywhere, or an `online/`
//!   deleted or restored from a copy, leaves a watermark that tells the truth, and the
//!   feature store replays exactly the commits the table lacks.
//! - `pos/<job>/<name>` -> opaque bytes + CRC-32C (u32 LE) of the key and the bytes:
//!   a streaming job's source positions (and what else it must keep with them),
//!   written in the same transaction as the rows they produced ([`super::write::commit_all`]).
//!
//! A table's id (u32, big-endian at the end of every row key) never changes and is
//! never reused, so the rows of a table are found from its id alone.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::encode::crc::crc32c_append;
use crate::encode::row::{RowLayout, ValueType};
use crate::join::keys::KeyKind;

pub const FORMAT_KEY: &[u8] = b"format";
pub const FORMAT_MAGIC: &[u8] = b"pitstop-online";
/// 2: rows end with a checksum, definitions too ([`crate::encode::row`]).
pub const FORMAT_VERSION: u32 = 2;
pub const NEXT_ID_KEY: &[u8] = b"next_table_id";
pub const TABLE_PREFIX: &[u8] = b"table/";
/// u64 LE, bumped whenever a table is dropped: cached definitions and prepared reads
/// made under another version must be resolved again (a re-created table has a new id).
pub const CATALOG_VERSION_KEY: &[u8] = b"catalog_version";
const DEF_FORMAT: u8 = 2;

pub const MARK_PREFIX: &[u8] = b"mark/";

/// The `meta` key of the watermark of table `name`.
pub fn mark_key(name: &str) -> Vec<u8> {
    let mut k = MARK_PREFIX.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// A watermark as stored: the version (i64 LE) and its CRC-32C (u32 LE), so a damaged
/// watermark is found rather than believed (one set too high would hide commits).
pub fn mark_value(version: i64) -> Vec<u8> {
    let mut v = version.to_le_bytes().to_vec();
    v.extend_from_slice(&crate::encode::crc::crc32c_parts(&[&v]).to_le_bytes());
    v
}

/// A watermark whose bytes do not check out.
#[derive(Debug)]
pub struct DamagedMark;

/// A stored watermark: Ok(None) when absent, Err when damaged.
pub fn mark_of(value: Option<&[u8]>) -> Result<Option<i64>, DamagedMark> {
    let Some(b) = value else {
        return Ok(None);
    };
    if b.len() != 12 || crate::encode::crc::crc32c_parts(&[&b[..8]]).to_le_bytes() != b[8..] {
        return Err(DamagedMark);
    }
    Ok(Some(i64::from_le_bytes(
        b[..8].try_into().map_err(|_| DamagedMark)?,
    )))
}

pub const POS_PREFIX: &[u8] = b"pos/";

/// The `meta` key of position `name` (`<job>/<partition>`).
pub fn pos_key(name: &str) -> Vec<u8> {
    let mut k = POS_PREFIX.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// A position as stored: its bytes and a CRC-32C of key and bytes (u32 LE), so a
/// damaged position (or one copied under another key) is found rather than believed.
pub fn pos_value(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(value.len() + 4);
    v.extend_from_slice(value);
    v.extend_from_slice(&crate::encode::crc::crc32c_parts(&[key, value]).to_le_bytes());
    v
}

/// The bytes of a stored position; None when damaged.
pub fn pos_of(key: &[u8], stored: &[u8]) -> Option<Vec<u8>> {
    let (value, crc) = stored.split_at_checked(stored.len().checked_sub(4)?)?;
    (crate::encode::crc::crc32c_parts(&[key, value]).to_le_bytes() == crc).then(|| value.to_vec())
}

/// The `meta` key of table `name`.
pub fn table_key(name: &str) -> Vec<u8> {
    let mut k = TABLE_PREFIX.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// The catalog version stored in `meta` (0 when absent).
pub fn version_of(value: Option<&[u8]>) -> u64 {
    value
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

/// The value of the `format` key.
pub fn format_value() -> Vec<u8> {
    let mut v = FORMAT_MAGIC.to_vec();
    v.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    v
}

/// One table: its id, key columns and feature columns. Immutable once registered.
#[derive(Debug)]
pub struct TableDef {
    pub name: String,
    pub id: u32,
    /// Key columns, in key order: (name, kind).
    pub keys: Vec<(String, KeyKind)>,
    /// The feature columns as Arrow fields (all nullable), in row-layout order.
    pub schema: SchemaRef,
    pub layout: RowLayout,
}

impl TableDef {
    pub fn new(name: String, id: u32, keys: Vec<(String, KeyKind)>, fields: Vec<Field>) -> Self {
        let types = fields
            .iter()
            .map(|f| ValueType::of(f.data_type()).expect("checked feature type"))
            .collect();
        TableDef {
            name,
            id,
            keys,
            schema: Arc::new(Schema::new(fields)),
            layout: RowLayout::new(1, types),
        }
    }

    pub fn feature_names(&self) -> Vec<String> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    pub fn key_names(&self) -> Vec<String> {
        self.keys.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The Arrow type a feature column is stored (and read back) as.
    pub fn stored_type(dt: &DataType) -> Option<DataType> {
        Some(match ValueType::of(dt)? {
            ValueType::Utf8 => DataType::Utf8,
            ValueType::Binary => DataType::Binary,
            _ => dt.clone(),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![DEF_FORMAT];
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.layout.schema_version.to_le_bytes());
        out.extend_from_slice(&(self.keys.len() as u16).to_le_bytes());
        for (name, kind) in &self.keys {
            put_str(&mut out, name);
            out.push(match kind {
                KeyKind::Int => 0,
                KeyKind::Str => 1,
            });
        }
        out.extend_from_slice(&(self.schema.fields().len() as u16).to_le_bytes());
        for (f, t) in self.schema.fields().iter().zip(&self.layout.types) {
            put_str(&mut out, f.name());
            out.push(type_code(*t));
            if let DataType::Timestamp(unit, tz) = f.data_type() {
                out.push(unit_code(*unit));
                put_str(&mut out, tz.as_deref().unwrap_or(""));
            }
        }
        let crc = crc32c_append(crc32c_append(0, self.name.as_bytes()), &out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses a stored definition; None if the bytes are not one (or their checksum,
    /// over the name and the bytes, does not match).
    pub fn decode(name: &str, bytes: &[u8]) -> Option<TableDef> {
        let (bytes, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32c_append(crc32c_append(0, name.as_bytes()), bytes).to_le_bytes() != crc {
            return None;
        }
        let mut r = Reader(bytes);
        if r.u8()? != DEF_FORMAT {
            return None;
        }
        let id = r.u32()?;
        let version = r.u32()?;
        let n_keys = r.u16()? as usize;
        let mut keys = Vec::with_capacity(n_keys);
        for _ in 0..n_keys {
            let name = r.str()?;
            let kind = match r.u8()? {
                0 => KeyKind::Int,
                1 => KeyKind::Str,
                _ => return None,
            };
            keys.push((name, kind));
        }
        let n_cols = r.u16()? as usize;
        let mut fields = Vec::with_capacity(n_cols);
        for _ in 0..n_cols {
            let name = r.str()?;
            let dt = match r.u8()? {
                1 => DataType::Boolean,
                2 => DataType::Int8,
                3 => DataType::Int16,
                4 => DataType::Int32,
                5 => DataType::Int64,
                6 => DataType::UInt8,
                7 => DataType::UInt16,
                8 => DataType::UInt32,
                9 => DataType::UInt64,
                10 => DataType::Float32,
                11 => DataType::Float64,
                12 => DataType::Date32,
                13 => DataType::Date64,
                14 => {
                    let unit = match r.u8()? {
                        0 => TimeUnit::Second,
                        1 => TimeUnit::Millisecond,
                        2 => TimeUnit::Microsecond,
                        3 => TimeUnit::Nanosecond,
                        _ => return None,
                    };
                    let tz = r.str()?;
                    DataType::Timestamp(unit, (!tz.is_empty()).then(|| tz.into()))
                }
                15 => DataType::Utf8,
                16 => DataType::Binary,
                _ => return None,
            };
            fields.push(Field::new(name, dt, true));
        }
        if !r.0.is_empty() || keys.is_empty() {
            return None;
        }
        let mut def = TableDef::new(name.to_string(), id, keys, fields);
        def.layout.schema_version = version;
        Some(def)
    }
}

fn type_code(t: ValueType) -> u8 {
    match t {
        ValueType::Bool => 1,
        ValueType::I8 => 2,
        ValueType::I16 => 3,
        ValueType::I32 => 4,
        ValueType::I64 => 5,
        ValueType::U8 => 6,
        ValueType::U16 => 7,
        ValueType::U32 => 8,
        ValueType::U64 => 9,
        ValueType::F32 => 10,
        ValueType::F64 => 11,
        ValueType::Date32 => 12,
        ValueType::Date64 => 13,
        ValueType::Timestamp(_) => 14,
        ValueType::Utf8 => 15,
        ValueType::Binary => 16,
    }
}

fn unit_code(u: TimeUnit) -> u8 {
    match u {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 1,
        TimeUnit::Microsecond => 2,
        TimeUnit::Nanosecond => 3,
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_round_trip() {
        let def = TableDef::new(
            "clicks/v2".into(),
            7,
            vec![("user".into(), KeyKind::Int), ("item".into(), KeyKind::Str)],
            vec![
                Field::new("a", DataType::Float32, true),
                Field::new("b", DataType::Utf8, true),
                Field::new(
                    "t",
                    DataType::Timestamp(TimeUnit::Microsecond, Some("Europe/Paris".into())),
                    true,
                ),
                Field::new("n", DataType::Timestamp(TimeUnit::Second, None), true),
                Field::new("flag", DataType::Boolean, true),
            ],
        );
        let bytes = def.encode();
        let back = TableDef::decode("clicks/v2", &bytes).unwrap();
        assert_eq!(back.id, 7);
        assert_eq!(back.keys, def.keys);
        assert_eq!(back.schema, def.schema);
        assert_eq!(back.layout.types, def.layout.types);
        for cut in 0..bytes.len() {
            assert!(TableDef::decode("clicks/v2", &bytes[..cut]).is_none());
        }
        assert!(TableDef::decode("clicks/v3", &bytes).is_none());
        for bit in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(TableDef::decode("clicks/v2", &bad).is_none(), "bit {bit}");
        }
    }
}
