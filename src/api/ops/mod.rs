//! Operator endpoints, by concern: the queues and workers
//! ([`queues`]), links and sync logs ([`links`]), the connections
//! ([`connections`]). Viewers read; operators also change.

use poem_openapi::Enum;

use crate::domain::{Provider, SyncStatus};

pub(crate) mod connections;
pub(crate) mod links;
pub(crate) mod queues;

pub use connections::ConnectionsOpsApi;
pub use links::LinkOpsApi;
pub use queues::QueueOpsApi;

/// A job state, as a filter.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "lowercase")]
pub enum StateParam {
    /// Ready to run.
    Pending,
    /// Waiting for its time.
    Scheduled,
    /// Claimed by a worker.
    Running,
    /// Finished.
    Done,
    /// Out of attempts.
    Dead,
}

impl From<StateParam> for workers::JobState {
    fn from(s: StateParam) -> Self {
        match s {
            StateParam::Pending => Self::Pending,
            StateParam::Scheduled => Self::Scheduled,
            StateParam::Running => Self::Running,
            StateParam::Done => Self::Done,
            StateParam::Dead => Self::Dead,
        }
    }
}

/// A link status, as a filter.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "lowercase")]
pub enum LinkStatusParam {
    /// Waiting for a push.
    Pending,
    /// Up to date.
    Synced,
    /// Failed for good.
    Error,
}

impl From<LinkStatusParam> for SyncStatus {
    fn from(s: LinkStatusParam) -> Self {
        match s {
            LinkStatusParam::Pending => Self::Pending,
            LinkStatusParam::Synced => Self::Synced,
            LinkStatusParam::Error => Self::Error,
        }
    }
}

/// A provider, as a parameter.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "lowercase")]
pub enum ProviderParam {
    /// HubSpot.
    Hubspot,
    /// Pipedrive.
    Pipedrive,
}

impl From<ProviderParam> for Provider {
    fn from(p: ProviderParam) -> Self {
        match p {
            ProviderParam::Hubspot => Self::Hubspot,
            ProviderParam::Pipedrive => Self::Pipedrive,
        }
    }
}

fn ms_time(ms: i64) -> Option<chrono::DateTime<chrono::Utc>> {
    (ms > 0)
        .then(|| chrono::DateTime::from_timestamp_millis(ms))
        .flatten()
}
