//! One delivery attempt: build the request, sign it, post it, log it.

use std::error::Error as _;

use serde_json::{json, Value};

use super::log::{Attempt, Batch, Kind};
use super::queue::Shared;
use super::sign;

/// The `User-Agent` HubSpot's webhook requests carry.
const HUBSPOT_USER_AGENT: &str = "HubSpot Connect 2.0 (http://dev.hubspot.com/)";

/// The app's status, or why there is none.
type Answer = Result<u16, String>;

impl Shared {
    /// Delivers `batch` once as attempt `n` (0 = first delivery) and records
    /// the attempt in the log (unless a reset came meanwhile).
    #[tracing::instrument(skip_all, fields(batch_id = batch.id, kind = ?batch.kind, attempt = n))]
    pub(super) async fn attempt(&self, batch: &Batch, n: u32) -> Attempt {
        let answer = match batch.kind {
            Kind::HubSpot => self.post_hubspot(batch, n).await,
            Kind::Events => self.post_event(batch).await,
        };
        let (status, error) = match answer {
            Ok(status) => (Some(status), None),
            Err(e) => (None, Some(e)),
        };
        if !status.is_some_and(|s| (200..300).contains(&s)) {
            tracing::info!(?status, ?error, "outbound delivery failed");
        }
        let attempt = Attempt {
            batch_id: batch.id,
            kind: batch.kind,
            owner: batch.owner.clone(),
            attempt: n,
            status,
            error,
            events: batch.events.len(),
            at_ms: self.clock.now_ms(),
        };
        // A reset while the request was out must leave the log empty.
        if batch.generation == self.generation() {
            self.log.record(attempt.clone());
        }
        attempt
    }

    async fn post_hubspot(&self, batch: &Batch, n: u32) -> Answer {
        let target = self.hubspot.as_ref().ok_or("webhooks are not configured")?;
        let body = hubspot_body(&batch.events, n);
        let timestamp = self.clock.now_ms().to_string();
        let v1 = sign::hubspot_v1(&target.client_secret, &body);
        let v3 = sign::hubspot_v3(
            &target.client_secret,
            "POST",
            &target.url,
            &body,
            &timestamp,
        );
        let request = self
            .client
            .post(&target.url)
            .timeout(target.retry.timeout)
            .header("Content-Type", "application/json")
            .header("User-Agent", HUBSPOT_USER_AGENT)
            .header("X-HubSpot-Signature-Version", "v1")
            .header("X-HubSpot-Signature", v1)
            .header("X-HubSpot-Signature-v3", v3)
            .header("X-HubSpot-Request-Timestamp", timestamp)
            .body(body);
        answer(request).await
    }

    async fn post_event(&self, batch: &Batch) -> Answer {
        let target = self.events.as_ref().ok_or("events are not configured")?;
        let body = serde_json::to_vec(batch.events.first().unwrap_or(&Value::Null))
            .map_err(|e| e.to_string())?;
        let customer = batch
            .owner
            .customer
            .as_deref()
            .ok_or("a flow call without a customer")?;
        let token = sign::flow_token(&target.workspace_key, &target.workspace_secret, customer)
            .map_err(|e| format!("minting the token: {e}"))?;
        let request = self
            .client
            .post(&target.url)
            .timeout(target.retry.timeout)
            .header("Content-Type", "application/json")
            .header("x-membrane-token", &token)
            .header("x-integration-app-token", token)
            .body(body);
        answer(request).await
    }
}

/// The array as sent on attempt `n`: each event's `attemptNumber` raised by
/// `n`, so the first delivery sends the events exactly as they were made.
fn hubspot_body(events: &[Value], n: u32) -> Vec<u8> {
    let stamped;
    let events = if n == 0 {
        events
    } else {
        stamped = events
            .iter()
            .map(|e| {
                let mut e = e.clone();
                if let Some(a) = e.get("attemptNumber").and_then(Value::as_u64) {
                    e["attemptNumber"] = json!(a + u64::from(n));
                }
                e
            })
            .collect::<Vec<_>>();
        &stamped
    };
    serde_json::to_vec(events).expect("JSON values serialize")
}

async fn answer(request: reqwest::RequestBuilder) -> Answer {
    match request.send().await {
        Ok(resp) => Ok(resp.status().as_u16()),
        Err(e) if e.is_timeout() => Err("no answer in time".into()),
        Err(e) => {
            let mut message = e.to_string();
            let mut source = e.source();
            while let Some(cause) = source {
                message.push_str(": ");
                message.push_str(&cause.to_string());
                source = cause.source();
            }
            Err(message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_raise_attempt_numbers_and_leave_the_rest() {
        let events = vec![
            json!({"eventId": 7, "attemptNumber": 0}),
            json!({"eventId": 8, "attemptNumber": 2}),
            json!({"eventId": 9}),
        ];
        let body = |n| serde_json::from_slice::<Value>(&hubspot_body(&events, n)).unwrap();
        assert_eq!(body(0), json!(events));
        assert_eq!(
            body(3),
            json!([{"eventId": 7, "attemptNumber": 3},
                   {"eventId": 8, "attemptNumber": 5},
                   {"eventId": 9}])
        );
    }
}
