//! `contact-sync workers` and `contact-sync stats`: the pool and the queues
//! and CRM connections at a glance.

use super::client::{emit, Api};
use super::format::{self, opt, percent};
use super::model::{Connection, Queue, Worker};
use super::table::Table;
use super::Target;

/// Prints the live workers of every queue.
///
/// # Errors
/// The api's message when it refuses, or the URL it could not be reached at.
pub async fn workers(target: &Target) -> anyhow::Result<()> {
    let api = Api::new(target)?;
    let body = api.get(&["workers"], &[]).await?;
    api.print(&body, |ws: Vec<Worker>| {
        let now = format::now_ms();
        let mut t = Table::new(&["NAME", "QUEUE", "HOST", "PID", "IN FLIGHT", "HEARTBEAT"])
            .right(&["PID", "IN FLIGHT"]);
        for w in &ws {
            let in_flight = match w.concurrency {
                Some(c) => format!("{}/{c}", w.in_flight),
                None => w.in_flight.to_string(),
            };
            t.row(vec![
                w.name.clone(),
                w.queue.clone(),
                opt(w.host.as_deref()),
                opt(w.pid),
                in_flight,
                format::ago_ms(w.last_heartbeat_ms, now),
            ]);
        }
        format!("{t}{}", format::count(ws.len() as u64, "live worker"))
    })
}

/// Prints every queue (depth per state, last 5 minutes, oldest pending) and
/// every CRM connection (links by status, error rate, rate-limit budget).
/// With `--json`: `{"queues": …, "connections": …}`, each as the api sent it.
///
/// # Errors
/// The api's message when it refuses, or the URL it could not be reached at.
pub async fn stats(target: &Target) -> anyhow::Result<()> {
    let api = Api::new(target)?;
    let (queues, connections) =
        tokio::try_join!(api.get(&["queues"], &[]), api.get(&["connections"], &[]))?;
    if api.json {
        // Each part is checked, so the combined document is valid JSON.
        for part in [&queues, &connections] {
            part.parse::<serde_json::Value>()?;
        }
        return emit(&format!(
            "{{\"queues\":{},\"connections\":{}}}",
            queues.raw(),
            connections.raw()
        ));
    }
    let text = format!(
        "{}\n{}",
        render_queues(&queues.parse::<Vec<Queue>>()?),
        render_connections(&connections.parse::<Vec<Connection>>()?)
    );
    emit(text.trim_end())
}

fn render_queues(queues: &[Queue]) -> String {
    let mut t = Table::new(&[
        "QUEUE",
        "PENDING",
        "SCHEDULED",
        "RUNNING",
        "DONE",
        "DEAD",
        "OK 5M",
        "FAILED 5M",
        "FAIL% 5M",
        "OLDEST PENDING",
    ])
    .right(&[
        "PENDING",
        "SCHEDULED",
        "RUNNING",
        "DONE",
        "DEAD",
        "OK 5M",
        "FAILED 5M",
        "FAIL% 5M",
        "OLDEST PENDING",
    ]);
    for q in queues {
        t.row(vec![
            q.queue.clone(),
            q.pending.to_string(),
            q.scheduled.to_string(),
            q.running.to_string(),
            q.done.to_string(),
            q.dead.to_string(),
            q.completed_5m.to_string(),
            q.failed_5m.to_string(),
            percent(q.failure_rate_5m),
            opt(q.oldest_pending_ms.map(format::duration)),
        ]);
    }
    t.to_string()
}

fn render_connections(connections: &[Connection]) -> String {
    let now = format::now_ms();
    let mut t = Table::new(&[
        "CRM",
        "SYNCED",
        "PENDING",
        "ERROR",
        "FAIL% 1H",
        "RATE/S",
        "LAST SUCCESS",
        "LAST POLL",
    ])
    .right(&["SYNCED", "PENDING", "ERROR", "FAIL% 1H", "RATE/S"]);
    for c in connections {
        t.row(vec![
            c.provider.clone(),
            c.links_synced.to_string(),
            c.links_pending.to_string(),
            c.links_error.to_string(),
            percent(c.error_rate_1h),
            format!("{}/{}", c.rate_limit_used, c.rate_limit),
            format::ago(c.last_success_at, now),
            format::ago(c.last_poll_at, now),
        ]);
    }
    t.to_string()
}
