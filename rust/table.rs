//! Borrowed views of Arrow tables: a [`Table`] is a schema plus the record batches it
//! arrived in (no concatenation, no copy), and a [`Column`] is one column's chunks.
//!
//! Kernels address rows by their global index (row `i` of the table, across batches);
//! [`Column::pieces`] maps a global row range back to zero-copy slices of the chunks.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, SchemaRef};

use crate::error::{Error, Result};

/// A table as the batches it came in. `name` labels it in error messages
/// ("spine", "feature table 1", "feature group 'clicks'").
#[derive(Clone, Debug)]
pub struct Table {
    pub name: String,
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl Table {
    pub fn new(name: impl Into<String>, schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        Table {
            name: name.into(),
            schema,
            batches,
        }
    }

    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    pub fn column_names(&self) -> Vec<String> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    /// The column called `name`; `role` says what it was wanted for, for the error.
    /// Dictionary-encoded columns are decoded to their value type.
    pub fn column(&self, name: &str, role: &str) -> Result<Column> {
        let index = self
            .schema
            .index_of(name)
            .map_err(|_| Error::MissingColumn {
                table: self.name.clone(),
                column: name.to_string(),
                role: role.to_string(),
                found: self.column_names(),
            })?;
        let field = self.schema.field(index).clone();
        let mut chunks: Vec<ArrayRef> = self
            .batches
            .iter()
            .map(|b| Arc::clone(b.column(index)))
            .collect();
        let mut data_type = field.data_type().clone();
        if let DataType::Dictionary(_, value_type) = &data_type {
            let value_type = (**value_type).clone();
            chunks = chunks
                .iter()
                .map(|c| arrow_cast::cast(c, &value_type))
                .collect::<Result<_, _>>()?;
            data_type = value_type;
        }
        let mut offsets = Vec::with_capacity(chunks.len() + 1);
        let mut total = 0usize;
        offsets.push(0);
        for c in &chunks {
            total += c.len();
            offsets.push(total);
        }
        Ok(Column {
            table: self.name.clone(),
            field,
            data_type,
            chunks,
            offsets,
        })
    }
}

/// One column of a [`Table`], as chunks.
#[derive(Clone, Debug)]
pub struct Column {
    pub table: String,
    pub field: Field,
    /// The type of every chunk (the dictionary's value type for dictionary columns).
    pub data_type: DataType,
    pub chunks: Vec<ArrayRef>,
    /// `offsets[i]` is the global row index of chunk `i`'s first row; last = len.
    offsets: Vec<usize>,
}

impl Column {
    pub fn name(&self) -> &str {
        self.field.name()
    }

    pub fn len(&self) -> usize {
        *self.offsets.last().unwrap_or(&0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn null_count(&self) -> usize {
        self.chunks.iter().map(|c| c.null_count()).sum()
    }

    /// Zero-copy slices covering global rows `[start, start + len)`, each with the
    /// global index of its first row.
    pub fn pieces(&self, start: usize, len: usize) -> Vec<(usize, ArrayRef)> {
        let end = start + len;
        let mut out = Vec::new();
        for (i, chunk) in self.chunks.iter().enumerate() {
            let (lo, hi) = (self.offsets[i], self.offsets[i + 1]);
            if hi <= start || lo >= end {
                continue;
            }
            let a = start.max(lo);
            let b = end.min(hi);
            out.push((a, chunk.slice(a - lo, b - a)));
        }
        out
    }
}

/// Splits `[0, n)` into blocks of at most `block` rows: the unit of parallel work.
pub fn blocks(n: usize, block: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n.div_ceil(block)).map(move |i| (i * block, block.min(n - i * block)))
}
