//! Entity keys from Python: a list of entities (scalars, or tuples for composite
//! keys), an Arrow table of key columns, or (for prepared readers) a dict of key
//! columns read without converting it in Python first. Values become
//! [`KeyValue`]s owned by Rust, so the GIL can be released around the lookup.

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyList, PyString, PyTuple};
use pyo3_arrow::PyTable;

use crate::error::Error;
use crate::online::{KeyValue, Keys};
use crate::table::Table;

/// Keys converted from Python, owned so the GIL can be released.
pub(crate) enum OwnedKeys {
    Table(Table),
    Values { arity: usize, values: Vec<KeyValue> },
}

impl OwnedKeys {
    pub(crate) fn keys(&self) -> Keys<'_> {
        match self {
            OwnedKeys::Table(t) => Keys::Columns(t),
            OwnedKeys::Values { arity, values } => Keys::Values {
                arity: *arity,
                values,
            },
        }
    }
}

fn key_value(item: &Bound<'_, PyAny>) -> PyResult<KeyValue> {
    if item.is_none() {
        return Ok(KeyValue::Null);
    }
    if let Ok(s) = item.cast::<PyString>() {
        return Ok(KeyValue::Str(s.to_str()?.to_owned()));
    }
    if item.is_instance_of::<PyBool>() {
        return Err(input_type("keys must be integers or strings, not bool"));
    }
    if item.is_instance_of::<PyInt>() || item.hasattr("__index__")? {
        // Most ids fit in an i64, whose conversion is one C call (i128's is not).
        if let Ok(v) = item.extract::<i64>() {
            return Ok(KeyValue::Int(v.into()));
        }
        return match item.extract::<i128>() {
            Ok(v) => Ok(KeyValue::Int(v)),
            // Too large for any Arrow integer: it cannot be stored, so it is missing.
            Err(_) => Ok(KeyValue::Int(i128::MAX)),
        };
    }
    Err(input_type(&format!(
        "keys must be integers or strings (or tuples of them for composite keys); got {} {}",
        item.get_type().name()?,
        item.repr()?
    )))
}

fn input_type(msg: &str) -> PyErr {
    super::errors::to_py(Error::InputType(msg.to_string()))
}

/// One entity: a scalar, or a tuple for a composite key.
pub(crate) fn push_entity(item: &Bound<'_, PyAny>, values: &mut Vec<KeyValue>) -> PyResult<usize> {
    if let Ok(t) = item.cast::<PyTuple>() {
        for v in t.iter() {
            values.push(key_value(&v)?);
        }
        Ok(t.len())
    } else {
        values.push(key_value(item)?);
        Ok(1)
    }
}

/// A list of entities (scalars or tuples) or an Arrow table of key columns.
pub(crate) fn extract_keys(obj: &Bound<'_, PyAny>) -> PyResult<OwnedKeys> {
    if let Ok(list) = obj.cast::<PyList>() {
        let mut values = Vec::with_capacity(list.len());
        let mut arity = None;
        for item in list.iter() {
            let a = push_entity(&item, &mut values)?;
            if *arity.get_or_insert(a) != a {
                return Err(input_type(
                    "keys mix entities of different lengths; give every composite key the \
                     same number of values",
                ));
            }
        }
        return Ok(OwnedKeys::Values {
            arity: arity.unwrap_or(1),
            values,
        });
    }
    let t: PyTable = obj.extract().map_err(|_| {
        PyTypeError::new_err("keys must be a list or an object with __arrow_c_stream__")
    })?;
    let (batches, schema) = t.into_inner();
    Ok(OwnedKeys::Table(Table::new("keys", schema, batches)))
}

/// Keys given as a dict of key columns (`names`, in key order), read without any
/// Python-side conversion when the dict holds the common shapes: a list or a 1-D
/// int64 numpy array per key column (of one length), or one entity as scalars (every
/// value an int or a str). None for anything else (a missing column, other arrays,
/// columns of different lengths): the caller converts it in Python, which also gives
/// the error messages. Values convert exactly as the normalized list would.
pub(crate) fn dict_keys(d: &Bound<'_, PyDict>, names: &[String]) -> PyResult<Option<OwnedKeys>> {
    let scalar = |v: &Bound<'_, PyAny>| {
        (v.is_exact_instance_of::<PyInt>() || v.is_exact_instance_of::<PyString>()).then_some(())
    };
    if !d.is_empty() && d.values().iter().all(|v| scalar(&v).is_some()) {
        let mut values = Vec::with_capacity(names.len());
        for name in names {
            match d.get_item(name)? {
                Some(v) => values.push(key_value(&v)?),
                None => return Ok(None),
            }
        }
        return Ok(Some(OwnedKeys::Values {
            arity: names.len(),
            values,
        }));
    }
    let mut columns = Vec::with_capacity(names.len());
    for name in names {
        let Some(v) = d.get_item(name)? else {
            return Ok(None);
        };
        if let Ok(list) = v.cast::<PyList>() {
            columns.push(Column::List(list.clone()));
        } else {
            match PyBuffer::<i64>::get(&v) {
                Ok(buf) if buf.dimensions() == 1 => columns.push(Column::Ints(buf.to_vec(d.py())?)),
                _ => return Ok(None),
            }
        }
    }
    let n = columns.first().map_or(0, Column::len);
    if columns.iter().any(|c| c.len() != n) {
        return Ok(None);
    }
    if let [Column::List(list)] = columns.as_slice() {
        // One key column: entities as `extract_keys` reads a list.
        return extract_keys(list.as_any()).map(Some);
    }
    let mut values = Vec::with_capacity(n * names.len());
    for r in 0..n {
        for c in &columns {
            values.push(match c {
                Column::List(list) => key_value(&list.get_item(r)?)?,
                Column::Ints(v) => KeyValue::Int(i128::from(v[r])),
            });
        }
    }
    Ok(Some(OwnedKeys::Values {
        arity: names.len(),
        values,
    }))
}

/// One key column of a dict (see [`dict_keys`]).
enum Column<'py> {
    List(Bound<'py, PyList>),
    Ints(Vec<i64>),
}

impl Column<'_> {
    fn len(&self) -> usize {
        match self {
            Column::List(l) => l.len(),
            Column::Ints(v) => v.len(),
        }
    }
}
