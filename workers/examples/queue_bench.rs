//! Queue benchmark: no-op jobs through apalis workers over the backend, and a
//! backlog drain.
//!
//! `cargo run --release -p workers --example queue_bench -- [JOBS] [CONCURRENCY] [WORKERS]`
//! (defaults 100000, 50, 1) against `REDIS_URL` (default redis://127.0.0.1:6379).
//! Pushes JOBS no-op jobs first (the backlog), then starts the worker(s) in
//! this process under one apalis Monitor and times the drain; prints push
//! rate and drain rate.

use std::time::{Duration, Instant};

use apalis::prelude::*;
use serde::{Deserialize, Serialize};
use workers::{JobError, PushOptions, Queue, RedisBackend, WorkerConfig};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Noop {
    n: u64,
}

async fn run(_job: Noop) -> Result<(), JobError> {
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let jobs = args.first().copied().unwrap_or(100_000);
    let concurrency = args.get(1).copied().unwrap_or(50);
    let runtimes = args.get(2).copied().unwrap_or(1).max(1);
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let ns = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let q = Queue::connect(&url, &ns).await?;
    let queue = "bench";

    let payloads: Vec<String> = (0..jobs).map(|i| format!("{{\"n\":{i}}}")).collect();
    let t = Instant::now();
    q.push_many_raw(queue, &payloads, PushOptions::default())
        .await?;
    let push = t.elapsed();

    let mut cfg = WorkerConfig::new(queue);
    cfg.concurrency = concurrency;
    cfg.fetch_batch = concurrency.min(200);
    cfg.poll_interval = Duration::from_millis(5);
    let backend = RedisBackend::<Noop>::new(Queue::connect(&url, &ns).await?, cfg);
    let policy = backend.retry_policy();
    let t = Instant::now();
    let mut monitor = Monitor::new();
    for i in 0..runtimes {
        let (backend, policy) = (backend.clone(), policy.clone());
        monitor = monitor.register(move |_| {
            WorkerBuilder::new(format!("bench-{i}"))
                .backend(backend.clone())
                .retry(policy.clone())
                .timeout(Duration::from_secs(30))
                .parallelize(tokio::spawn)
                .build(run)
        });
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(monitor.run_with_signal(async move {
        let _ = stopped.await;
        Ok(())
    }));
    let counts = q
        .wait_idle(queue, Duration::from_secs(600))
        .await?
        .ok_or("backlog did not drain in 10 minutes")?;
    let drain = t.elapsed();
    let _ = stop.send(());
    running.await??;
    let secs = drain.as_secs_f64();
    println!("redis: {url}");
    println!(
        "push:  {jobs} jobs in {:.2} s = {:.0} jobs/s (pipelined)",
        push.as_secs_f64(),
        jobs as f64 / push.as_secs_f64()
    );
    println!(
        "drain: {jobs} no-op jobs, {runtimes} runtime(s) x concurrency {concurrency}: {secs:.2} s = {:.0} jobs/s (completed {}, kept done {})",
        jobs as f64 / secs,
        counts.completed_total,
        counts.done
    );
    Ok(())
}
