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

    // --- the online store (rust/online/) ---
    #[error("'{path}' is not a pitstop store: {detail}")]
    NotAStore { path: String, detail: String },

    #[error(
        "online store '{path}' is corrupt: {detail}; the online store is derived data: \
         rebuild it with `pitstop repair` (FeatureStore.repair_online(): it moves online/ \
         aside and materializes again from the offline tables)"
    )]
    CorruptStore { path: String, detail: String },

    #[error("online store '{path}': {op} failed: {detail}")]
    Store {
        path: String,
        op: String,
        detail: String,
    },

    #[error(
        "online store '{path}' was opened with readonly=True; open it without readonly to \
         write"
    )]
    ReadOnly { path: String },

    #[error("the online store has no table '{table}'; write to it first (tables: {})", py_list(.found))]
    UnknownTable { table: String, found: Vec<String> },

    /// `table` is preformatted: "table 'x'" or "tables 'a', 'b'".
    #[error("{table} has no feature '{feature}' (features: {})", py_list(.found))]
    UnknownFeature {
        table: String,
        feature: String,
        found: Vec<String>,
    },

    #[error("table '{table}': {detail}")]
    SchemaMismatch { table: String, detail: String },

    #[error(
        "table '{table}' column '{column}' is {expected} in the store but the data has {got}; \
         {hint}"
    )]
    ValueType {
        table: String,
        column: String,
        expected: DataType,
        got: DataType,
        hint: String,
    },

    #[error(
        "table '{table}' column '{column}' has values that do not fit its stored type \
         {expected}: {detail}"
    )]
    ValueOutOfRange {
        table: String,
        column: String,
        expected: DataType,
        detail: String,
    },

    #[error(
        "{table} column '{column}' has type {dtype}; features must be booleans, integers, \
         floats, strings, binary, dates or timestamps (cast it first)"
    )]
    UnsupportedFeatureType {
        table: String,
        column: String,
        dtype: DataType,
    },

    #[error(
        "key column '{column}' of table '{table}' holds {expected}; got {got} (pass keys of \
         the table's key type)"
    )]
    KeyType {
        table: String,
        column: String,
        expected: String,
        got: String,
    },

    #[error(
        "feature '{column}' of table '{table}' has type {dtype}; read_matrix returns float32, \
         so it takes numeric and boolean features only (read() returns any type)"
    )]
    NotNumeric {
        table: String,
        column: String,
        dtype: DataType,
    },

    #[error(
        "{table} column '{column}' is {dtype}; sum, mean, std, min and max need a numeric \
         column (integers or floats; cast it first)"
    )]
    AggColumnType {
        table: String,
        column: String,
        dtype: DataType,
    },

    #[error(
        "aggregation output '{column}' has the name of {first}; rename that column, or drop \
         the duplicate aggregation"
    )]
    OutputNameTaken { column: String, first: String },

    #[error(
        "{table} row {row} has an entity key of {len} bytes encoded; keys are limited to \
         {max} bytes (use shorter ids)"
    )]
    KeyTooLong {
        table: String,
        row: usize,
        len: usize,
        max: usize,
    },

    #[error("{0}")]
    InputType(String),

    /// A column whose type does not fit what was fitted or declared for it.
    #[error("{0}")]
    Schema(String),

    // --- statistics and drift (rust/stats/) ---
    #[error("{table} column '{column}' has type {dtype}; {detail}")]
    StatsColumnType {
        table: String,
        column: String,
        dtype: DataType,
        detail: String,
    },

    /// A table read was dropped meanwhile; prepared reads resolve their tables again
    /// and retry, so this surfaces only if that keeps happening.
    #[error("the tables read changed during the read (a table was dropped); read again")]
    StaleCatalog,
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
            Error::NotAStore { .. } => "NotAStoreError",
            Error::CorruptStore { .. } => "CorruptStoreError",
            Error::Store { .. } => "StoreError",
            Error::ReadOnly { .. } => "StoreError",
            Error::UnknownTable { .. } => "NotFoundError",
            Error::UnknownFeature { .. } => "NotFoundError",
            Error::SchemaMismatch { .. } => "SchemaError",
            Error::ValueType { .. } => "ColumnTypeError",
            Error::ValueOutOfRange { .. } => "DataError",
            Error::UnsupportedFeatureType { .. } => "ColumnTypeError",
            Error::KeyType { .. } => "ColumnTypeError",
            Error::KeyTooLong { .. } => "DataError",
            Error::NotNumeric { .. } => "ColumnTypeError",
            Error::AggColumnType { .. } => "ColumnTypeError",
            Error::OutputNameTaken { .. } => "SchemaError",
            Error::InputType(_) => "InputTypeError",
            Error::Schema(_) => "SchemaError",
            Error::StatsColumnType { .. } => "ColumnTypeError",
            Error::StaleCatalog => "StoreError",
        }
    }
}
