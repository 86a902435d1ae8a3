//! The log of action-run calls, for tests and benchmarks to assert on.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use serde::Serialize;

/// How many entries are kept; the oldest are dropped beyond this.
const CAPACITY: usize = 200_000;

/// One action-run call and how it was answered.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Call {
    /// The customer the token named (the default one when it named none);
    /// absent when the token was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) customer: Option<String>,
    /// As given in the URL, even when unknown.
    pub(crate) connection: String,
    pub(crate) action: String,
    pub(crate) status: u16,
    /// When the call was handled (after any injected latency), Unix ms.
    pub(crate) at_ms: i64,
    /// `fields.primaryEmail` of the input, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) email: Option<String>,
    /// The input `id`, or the id an upsert resolved to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) record_id: Option<String>,
}

/// A bounded, append-only log.
#[derive(Default)]
pub(crate) struct CallLog {
    calls: Mutex<VecDeque<Call>>,
}

impl CallLog {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Call>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn record(&self, call: Call) {
        let mut calls = self.lock();
        if calls.len() >= CAPACITY {
            calls.pop_front();
        }
        calls.push_back(call);
    }

    /// The calls, oldest first, filtered by customer, connection and action
    /// when given.
    pub(crate) fn list(
        &self,
        customer: Option<&str>,
        connection: Option<&str>,
        action: Option<&str>,
    ) -> Vec<Call> {
        self.lock()
            .iter()
            .filter(|c| customer.is_none_or(|x| c.customer.as_deref() == Some(x)))
            .filter(|c| connection.is_none_or(|x| c.connection == x))
            .filter(|c| action.is_none_or(|x| c.action == x))
            .cloned()
            .collect()
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
    }
}
