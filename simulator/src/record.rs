//! A stored record: what the store keeps, the connections render and the
//! change listeners are shown.

use serde_json::{Map, Value};

/// A stored record: system fields apart, the rest of the native record in
/// `body`.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) id: u64,
    pub(crate) created_ms: i64,
    /// Strictly increasing per record (see `Inner::tick` in
    /// `store/index.rs`); records may share one.
    pub(crate) updated_ms: i64,
    pub(crate) deleted_ms: Option<i64>,
    pub(crate) body: Map<String, Value>,
    /// The lower-cased primary email while the record is live: its key in
    /// the store's email index.
    pub(crate) email: Option<String>,
}
