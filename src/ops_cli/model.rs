//! The api's answers as this client reads them: the api's own view types,
//! read back (see the OpenAPI document at `/api/docs`), so the two cannot
//! drift apart. A field the api adds later is ignored by an older client.

pub(super) use crate::api::jobs::{JobView as Job, Moved};
pub(super) use crate::api::ops::connections::ConnectionView as Connection;
pub(super) use crate::api::ops::links::LinkPage;
pub(super) use crate::api::ops::queues::{QueueOverview as Queue, WorkerView as Worker};
pub(super) use crate::api::views::Count;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_suffixed_fields_match_the_api_names() {
        let q: Queue = serde_json::from_value(serde_json::json!({
            "queue": "q", "pending": 1, "scheduled": 0, "running": 0, "done": 0, "dead": 0,
            "completedTotal": 0, "failedTotal": 0, "completed5m": 7, "failed5m": 1,
            "failureRate5m": 0.125
        }))
        .unwrap();
        assert_eq!((q.completed_5m, q.failed_5m), (7, 1));
        let c: Connection = serde_json::from_value(serde_json::json!({
            "provider": "hubspot", "errorRate1h": 0.5, "linksPending": 0, "linksSynced": 2,
            "linksError": 1, "rateLimitUsed": 0, "rateLimit": 9
        }))
        .unwrap();
        assert_eq!(c.error_rate_1h, 0.5);
    }
}
