//! The one error type of the Rust core.
//!
//! Every variant says what is wrong and how to fix it, and names the table and column
//! involved. `py/errors.rs` maps each variant to exactly one Python exception class
//! (defined in `python/pitstop/errors.py`); [`Error::py_class`] is that mapping, kept
//! here so that adding a variant without choosing its class does not compile.

use arrow_schema::{ArrowError, DataType};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{table} has no column '{column}'; {role} (found: {})", py_list(.found))]
    MissingColumn {
        table: String,
        column: String,
        role: String,
        found: Vec<String>,
    },

    #[error(
        "{table} column '{column}' has type {dtype}; {role} must be a timestamp or date column \
         (cast it, e.g. pyarrow.compute.cast(col, pyarrow.timestamp('us')))"
    )]
    NotTemporal {
        table: String,
        column: String,
        role: String,
        dtype: DataType,
    },

    #[error(
        "{table} key column '{column}' has type {dtype}; keys must be integer or string columns"
    )]
    UnsupportedKeyType {
        table: String,
        column: String,
        dtype: DataType,
    },

    #[error(
        "key types differ: spine column '{spine_column}' is {spine_type} but {table} column \
         '{column}' is {dtype}; cast one side so both are integers or both are strings"
    )]
    KeyTypeMismatch {
        spine_column: String,
        spine_type: DataType,
        table: String,
        column: String,
        dtype: DataType,
    },

    #[error(
        "{table} column '{column}' has {count} null value(s); {role} must not be null \
         (drop or fill those rows first)"
    )]
    NullValues {
        table: String,
        column: String,
        role: String,
        count: usize,
    },

    #[error(
        "{table} column '{column}' holds a time that does not fit in 64 bits at {unit} \
         resolution (value {value}); use a coarser unit or a time between 1678 and 2261"
    )]
    TimeOutOfRange {
        table: String,
        column: String,
        unit: String,
        value: i64,
    },

    #[error(
        "output column '{column}' would appear twice ({first} and {second}); give the \
         feature tables a prefix (prefix=...) or rename the column"
    )]
    NameCollision {
        column: String,
        first: String,
        second: String,
    },

    #[error("{0}")]
    InvalidArgument(String),

    #[error("{table} has {rows} rows; at most {max} rows are supported per table")]
    TooManyRows {
        table: String,
        rows: usize,
        max: usize,
    },

    #[error("arrow error: {0}")]
    Arrow(#[from] ArrowError),
}

/// `['a', 'b']`: a list of names as a Python user would write it.
pub fn py_list(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    format!("[{}]", quoted.join(", "))
}

impl Error {
    /// The Python exception class (in `pitstop.errors`) this variant becomes.
    pub fn py_class(&self) -> &'static str {
        match self {
            Error::MissingColumn { .. } => "SchemaError",
            Error::NameCollision { .. } => "SchemaError",
            Error::NotTemporal { .. } => "ColumnTypeError",
            Error::UnsupportedKeyType { .. } => "ColumnTypeError",
            Error::KeyTypeMismatch { .. } => "ColumnTypeError",
            Error::NullValues { .. } => "DataError",
            Error::TimeOutOfRange { .. } => "DataError",
            Error::TooManyRows { .. } => "DataError",
            Error::InvalidArgument(_) => "InvalidArgumentError",
            Error::Arrow(_) => "ArrowError",
        }
    }
}
