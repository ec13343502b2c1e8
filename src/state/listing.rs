//! Records that do not decode. One unreadable record (a driver bug, a torn
//! write a newer redb would have refused, a hand edit) must not stop every
//! pod on the node: readers pass over it, and it is reported — in the log
//! on every read and on the debug API — until an operator removes it.

use serde::Serialize;

/// A stored record that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unreadable {
    /// The table (`prepared_claims`, `pod_attachments`).
    pub table: &'static str,
    /// Its key: the claim UID or the pod UID.
    pub key: String,
    /// Why it does not decode.
    pub error: String,
}

impl Unreadable {
    /// Logs the record as an error (with what the driver does about it)
    /// and returns it for the caller's listing.
    pub fn report(
        table: &'static str,
        key: &str,
        error: &dyn std::fmt::Display,
        consequence: &str,
    ) -> Unreadable {
        tracing::error!(table, key, error = %error, consequence, "unreadable record in state.redb");
        Unreadable {
            table,
            key: key.to_string(),
            error: error.to_string(),
        }
    }
}

/// What a table holds: the records that decode and those that do not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing<T> {
    /// Decoded records, in key order.
    pub records: Vec<T>,
    /// Records passed over.
    pub unreadable: Vec<Unreadable>,
}

impl<T> Default for Listing<T> {
    fn default() -> Self {
        Listing {
            records: Vec::new(),
            unreadable: Vec::new(),
        }
    }
}
