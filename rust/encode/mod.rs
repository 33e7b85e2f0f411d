//! The online store's byte formats: entity keys ([`key`]) and feature rows ([`row`]),
//! and the conversions between them and Arrow columns ([`columns`]).
//!
//! An LMDB key is `key::encode(entity) ++ table_id (u32 big-endian)`; the value is a
//! row. Both formats are self-describing enough that decoding arbitrary bytes returns
//! an error instead of panicking (property-tested), and both are versioned: keys by
//! their tags, rows by a format byte and the schema version they were written with.
//! Every row carries a CRC-32C ([`crc`]) of its key and bytes, checked on every read
//! (a large row per 4 KiB segment of its data, checked as they are read: [`segments`]).
//! No pyo3 here: `cargo test` covers this module.

pub mod columns;
pub mod crc;
pub mod key;
pub mod row;
pub mod segments;
