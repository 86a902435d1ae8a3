//! `GET /metrics` in the Prometheus text format: pool-wide counters and
//! histograms (written by every process into Redis), plus gauges read now —
//! jobs per queue and state, links per provider and status, the progress
//! of each first sync underway.

use std::collections::BTreeSet;
use std::fmt::Write;

use poem::http::StatusCode;
use poem::web::Data;
use poem::{handler, IntoResponse, Response};

use super::jobs::QUEUES;
use super::ApiState;
use crate::domain::{Provider, SyncStatus};
use crate::store::FirstSyncRecord;

fn base_name(series: &str) -> &str {
    let name = series.split('{').next().unwrap_or(series);
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(b) = name.strip_suffix(suffix) {
            return b;
        }
    }
    name
}

fn kind(base: &str) -> &'static str {
    if base.ends_with("_total") {
        "counter"
    } else {
        "histogram"
    }
}

/// Renders every metric.
async fn render(state: &ApiState) -> anyhow::Result<String> {
    let mut out = String::new();
    let q = state.enqueuer.queue();
    writeln!(out, "# HELP queue_jobs Jobs per queue and state.")?;
    writeln!(out, "# TYPE queue_jobs gauge")?;
    let mut oldest = Vec::new();
    for &name in QUEUES {
        let c = q.counts(name).await?;
        for (st, n) in [
            ("pending", c.pending),
            ("scheduled", c.scheduled),
            ("running", c.running),
            ("done", c.done),
            ("dead", c.dead),
        ] {
            writeln!(out, "queue_jobs{{queue=\"{name}\",state=\"{st}\"}} {n}")?;
        }
        oldest.push((
            name,
            q.oldest_pending_age(name)
                .await?
                .map_or(0.0, |d| d.as_secs_f64()),
        ));
    }
    writeln!(
        out,
        "# HELP queue_oldest_pending_seconds Age of the oldest pending job."
    )?;
    writeln!(out, "# TYPE queue_oldest_pending_seconds gauge")?;
    for (name, secs) in oldest {
        writeln!(
            out,
            "queue_oldest_pending_seconds{{queue=\"{name}\"}} {secs}"
        )?;
    }
    writeln!(
        out,
        "# HELP links Contact links per provider and sync status."
    )?;
    writeln!(out, "# TYPE links gauge")?;
    for p in Provider::ALL {
        let h = state.store.provider_health(p).await?;
        for s in [SyncStatus::Pending, SyncStatus::Synced, SyncStatus::Error] {
            let n = h.links.iter().find(|(x, _)| *x == s).map_or(0, |(_, n)| *n);
            writeln!(
                out,
                "links{{provider=\"{p}\",status=\"{}\"}} {n}",
                s.as_str()
            )?;
        }
    }
    writeln!(
        out,
        "# HELP connections_needing_reconnect Customers' connections Integration.app cannot use until they are reconnected (their jobs wait)."
    )?;
    writeln!(out, "# TYPE connections_needing_reconnect gauge")?;
    for p in Provider::ALL {
        let n = state.store.connections_needing_reconnect(p).await?;
        writeln!(out, "connections_needing_reconnect{{provider=\"{p}\"}} {n}")?;
    }
    first_syncs(state, &mut out).await?;
    state.metrics.flush().await?;
    let series = state.metrics.read().await?;
    let mut typed = BTreeSet::new();
    for (name, value) in &series {
        let base = base_name(name);
        if typed.insert(base.to_owned()) {
            writeln!(out, "# TYPE {base} {}", kind(base))?;
        }
        writeln!(out, "{name} {value}")?;
    }
    Ok(out)
}

/// A gauge of a first sync: name, help, and its value.
type Gauge = (&'static str, &'static str, fn(&FirstSyncRecord) -> f64);

/// Gauges of each first sync underway (one series per connection being
/// first-synced, gone when it finishes).
async fn first_syncs(state: &ApiState, out: &mut String) -> anyhow::Result<()> {
    let underway = state.store.first_syncs_underway().await?;
    let gauges: [Gauge; 5] = [
        (
            "first_sync_listed",
            "CRM records a first sync listed.",
            |f| f.listed as f64,
        ),
        (
            "first_sync_matched",
            "Listed records that met an app contact.",
            |f| f.matched as f64,
        ),
        ("first_sync_to_write", "Writes a first sync planned.", |f| {
            f.to_write as f64
        }),
        (
            "first_sync_written",
            "Writes made or handed to single pushes.",
            |f| f.written() as f64,
        ),
        (
            "first_sync_errors",
            "Records a first sync could not list or write.",
            |f| f.errors as f64,
        ),
    ];
    for (name, help, value) in gauges {
        writeln!(out, "# HELP {name} {help}")?;
        writeln!(out, "# TYPE {name} gauge")?;
        for (customer, p, f) in &underway {
            writeln!(
                out,
                "{name}{{customer=\"{customer}\",provider=\"{p}\"}} {}",
                value(f)
            )?;
        }
    }
    writeln!(
        out,
        "# HELP first_sync_seconds_left Seconds a first sync's writes have left at the rate in effect (absent while it lists)."
    )?;
    writeln!(out, "# TYPE first_sync_seconds_left gauge")?;
    for (customer, p, f) in &underway {
        let view = super::first_sync::FirstSyncView::new(
            f,
            *p,
            state.rate_limits.get(p).copied().unwrap_or(0),
        );
        if let Some(left) = view.seconds_left {
            writeln!(
                out,
                "first_sync_seconds_left{{customer=\"{customer}\",provider=\"{p}\",phase=\"{}\"}} {left}",
                view.phase
            )?;
        }
    }
    Ok(())
}

/// The metrics endpoint on a listener of its own (`METRICS_ADDR`): no token,
/// the listener is meant for an internal network.
#[handler]
pub async fn metrics(state: Data<&ApiState>) -> Response {
    respond(&state).await
}

/// The metrics endpoint on the api's own port: needs a viewer or operator
/// token, like the rest of the operator api.
#[handler]
pub async fn metrics_with_token(req: &poem::Request, state: Data<&ApiState>) -> Response {
    let token = req
        .header(poem::http::header::AUTHORIZATION)
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    let allowed = match (req.data::<super::auth::Tokens>(), token) {
        (Some(tokens), Some(t)) => tokens.can_read(t),
        _ => false,
    };
    if !allowed {
        return poem::web::Json(serde_json::json!({
            "error": "unauthorized",
            "message": "/metrics needs a viewer or operator token (or set METRICS_ADDR to serve it on a listener of its own)",
        }))
        .with_status(StatusCode::UNAUTHORIZED)
        .with_header("WWW-Authenticate", "Bearer")
        .into_response();
    }
    respond(&state).await
}

async fn respond(state: &ApiState) -> Response {
    match render(state).await {
        Ok(text) => Response::builder()
            .content_type("text/plain; version=0.0.4")
            .body(text),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "rendering metrics failed");
            poem::web::Json(
                serde_json::json!({ "error": "unavailable", "message": "metrics are unavailable" }),
            )
            .with_status(StatusCode::SERVICE_UNAVAILABLE)
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_types() {
        assert_eq!(
            base_name("job_duration_seconds_bucket{queue=\"a\",le=\"0.1\"}"),
            "job_duration_seconds"
        );
        assert_eq!(kind("job_duration_seconds"), "histogram");
        assert_eq!(
            base_name("crm_calls_total{provider=\"hubspot\"}"),
            "crm_calls_total"
        );
        assert_eq!(kind("crm_calls_total"), "counter");
    }
}
