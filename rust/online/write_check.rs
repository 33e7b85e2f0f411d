//! The batch upsert's validation ([`super`], step 1): a table name, the key, time and
//! feature columns of a batch checked against the table's registered definition (or a
//! definition built from the batch on a table's first write), and the casts of
//! compatible input types to the stored ones.
//!
//! **Rules.** Keys must name the registered key columns, in order, each of the
//! registered kind (integers or strings); event and created times are converted to
//! nanoseconds and may hold no nulls; the features must be exactly the registered ones
//! (a missing or an extra column is an error naming it). A stored type accepts the
//! input types [`compatible`] lists (the same value type, any integer to an integer or
//! float, float to float, any timestamp to a timestamp); the cast then checks every
//! value for overflow, so a value that does not fit is an error naming the column, not
//! a wrapped number. Every failure is a `PitstopError` that says what to change,
//! raised before the write transaction begins, so a refused batch leaves the store as
//! it was.
//!
//! **Cost.** The schema checks are O(columns); a time column costs one pass to look
//! for nulls and convert to microseconds; a cast costs one pass over the column (none
//! when the input type already is the stored one). A first write reads the catalog's
//! next table id in one read transaction.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_cast::{cast_with_options, CastOptions};
use arrow_schema::{DataType, Field, Schema, TimeUnit};

use super::STATUS;
use super::{catalog, Env, TableDef, WriteSpec};
use crate::encode::row::ValueType;
use crate::error::{Error, Result};
use crate::join::keys::KeyKind;
use crate::join::time;
use crate::table::{Column, Table};

pub(super) fn check_name(table: &str) -> Result<()> {
    if table.is_empty() || table.len() > 255 || table.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "table name {table:?} is not valid; use 1 to 255 characters without NUL"
        )));
    }
    Ok(())
}

/// A time column as ns since the epoch; nulls are an error.
pub(super) fn times(col: &Column, role: &str) -> Result<Vec<i64>> {
    let t = time::to_unit(col, role, TimeUnit::Nanosecond)?;
    if let Some(valid) = &t.valid {
        let count = valid.iter().filter(|v| !**v).count();
        if count > 0 {
            return Err(Error::NullValues {
                table: col.table.clone(),
                column: col.name().to_string(),
                role: role.to_string(),
                count,
            });
        }
    }
    Ok(t.values)
}

pub(super) fn kind_name(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Int => "integers",
        KeyKind::Str => "strings",
    }
}

pub(super) fn check_key_names(def: &TableDef, keys: &[String]) -> Result<()> {
    let names = def.key_names();
    if names != keys {
        return Err(Error::SchemaMismatch {
            table: def.name.clone(),
            detail: format!(
                "its entity key is {} but this write names {}; pass keys={}",
                crate::error::py_list(&names),
                crate::error::py_list(keys),
                crate::error::py_list(&names)
            ),
        });
    }
    Ok(())
}

pub(super) fn check_keys(
    def: &TableDef,
    keys: &[String],
    kinds: &[KeyKind],
    cols: &[Column],
) -> Result<()> {
    check_key_names(def, keys)?;
    for (((name, want), got), col) in def.keys.iter().zip(kinds).zip(cols) {
        if want != got {
            return Err(Error::KeyType {
                table: def.name.clone(),
                column: name.clone(),
                expected: kind_name(*want).into(),
                got: format!("a {} column", col.data_type),
            });
        }
    }
    Ok(())
}

pub(super) fn check_columns(def: &TableDef, found: &[String]) -> Result<()> {
    let want = def.feature_names();
    let missing: Vec<String> = want
        .iter()
        .filter(|w| !found.contains(w))
        .cloned()
        .collect();
    let extra: Vec<String> = found
        .iter()
        .filter(|f| !want.contains(f))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(Error::SchemaMismatch {
            table: def.name.clone(),
            detail: format!(
                "the data lacks feature column(s) {}; a write must carry every feature of the \
                 table (features: {})",
                crate::error::py_list(&missing),
                crate::error::py_list(&want)
            ),
        });
    }
    if !extra.is_empty() {
        return Err(Error::SchemaMismatch {
            table: def.name.clone(),
            detail: format!(
                "the data has column(s) {} that the table does not (features: {}); a table's \
                 schema is fixed by its first write: drop them, or write to a new table version",
                crate::error::py_list(&extra),
                crate::error::py_list(&want)
            ),
        });
    }
    Ok(())
}

pub(super) fn new_def(
    env: &Env,
    spec: &WriteSpec,
    label: &str,
    data: &Table,
    kinds: Vec<KeyKind>,
    features: &[String],
) -> Result<TableDef> {
    let mut seen = std::collections::HashSet::new();
    for k in spec.keys {
        if !seen.insert(k.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "keys name column '{k}' twice"
            )));
        }
    }
    let mut fields = Vec::with_capacity(features.len());
    for name in features {
        if name == STATUS {
            return Err(Error::SchemaMismatch {
                table: spec.table.to_string(),
                detail: format!(
                    "a feature may not be called '{STATUS}': read() adds a column of that name \
                     (rename it)"
                ),
            });
        }
        let col = data.column(name, "")?;
        let stored =
            TableDef::stored_type(&col.data_type).ok_or_else(|| Error::UnsupportedFeatureType {
                table: label.to_string(),
                column: name.clone(),
                dtype: col.data_type.clone(),
            })?;
        fields.push(Field::new(name.clone(), stored, true));
    }
    let id = env.with_read(|txn| {
        txn.get(env.meta, catalog::NEXT_ID_KEY)
            .map_err(|e| env.lmdb_error("read the catalog", e))?
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| env.corrupt("the catalog has no next table id".into()))
    })?;
    let keys = spec.keys.iter().cloned().zip(kinds).collect();
    Ok(TableDef::new(spec.table.to_string(), id, keys, fields))
}

/// Which stored types accept which input types (after which the cast checks values).
pub(super) fn compatible(from: &DataType, to: &DataType) -> bool {
    let (Some(f), Some(t)) = (ValueType::of(from), ValueType::of(to)) else {
        return false;
    };
    let int = |v: ValueType| {
        matches!(
            v,
            ValueType::I8
                | ValueType::I16
                | ValueType::I32
                | ValueType::I64
                | ValueType::U8
                | ValueType::U16
                | ValueType::U32
                | ValueType::U64
        )
    };
    let float = |v: ValueType| matches!(v, ValueType::F32 | ValueType::F64);
    f == t
        || (int(f) && (int(t) || float(t)))
        || (float(f) && float(t))
        || (matches!(f, ValueType::Timestamp(_)) && matches!(t, ValueType::Timestamp(_)))
}

/// `col` as the stored type `to`: as is when equal, else cast with overflow checks.
pub(super) fn convert(def: &TableDef, col: Column, to: &DataType) -> Result<Column> {
    if &col.data_type == to {
        return Ok(col);
    }
    if !compatible(&col.data_type, to) {
        return Err(Error::ValueType {
            table: def.name.clone(),
            column: col.name().to_string(),
            expected: to.clone(),
            got: col.data_type.clone(),
            hint: "cast the column to the stored type (integers widen and turn into floats, \
                   strings and timestamps of any kind convert; nothing else does)"
                .into(),
        });
    }
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    let schema = Arc::new(Schema::new(vec![Field::new(col.name(), to.clone(), true)]));
    let mut batches = Vec::with_capacity(col.chunks.len());
    for chunk in &col.chunks {
        let cast = cast_with_options(chunk, to, &options).map_err(|e| Error::ValueOutOfRange {
            table: def.name.clone(),
            column: col.name().to_string(),
            expected: to.clone(),
            detail: e.to_string(),
        })?;
        batches.push(RecordBatch::try_new(Arc::clone(&schema), vec![cast])?);
    }
    Table::new(col.table.clone(), schema, batches).column(col.name(), "")
}
