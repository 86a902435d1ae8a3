//! The scheduler: enqueues a `provider-poll` per polled provider every
//! interval. Ticks are aligned to the interval and claimed once in Redis, so
//! any number of scheduler replicas enqueue each tick exactly once.
//! (apalis-cron schedules per process and has no cross-replica de-duplication;
//! the claim is what the product needs, so the loop is written here.)

use std::time::Duration;

use crate::domain::Provider;
use crate::jobs::Enqueuer;

/// Runs until `shutdown` resolves.
pub async fn run(
    enqueuer: Enqueuer,
    providers: Vec<Provider>,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let interval = interval.max(Duration::from_secs(1));
    let step = interval.as_millis() as i64;
    tokio::pin!(shutdown);
    tracing::info!(
        ?providers,
        interval_secs = interval.as_secs(),
        "scheduler started"
    );
    loop {
        let now = chrono::Utc::now().timestamp_millis();
        let tick = now / step;
        for &p in &providers {
            match enqueuer
                .queue()
                .claim_once(&format!("tick:{p}:{step}:{tick}"), interval * 2)
                .await
            {
                Ok(true) => match enqueuer.poll(p, false).await {
                    Ok(id) => tracing::info!(provider = %p, job_id = %id, tick, "poll queued"),
                    Err(e) => tracing::warn!(provider = %p, error = %e, "queueing a poll failed"),
                },
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "claiming a scheduler tick failed"),
            }
        }
        let next = (tick + 1) * step;
        let wait =
            Duration::from_millis((next - chrono::Utc::now().timestamp_millis()).max(1) as u64);
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    tracing::info!("scheduler stopped");
}
