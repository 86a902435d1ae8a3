//! Helpers shared by the integration tests: a fresh namespace per test on the
//! Redis at REDIS_URL, a fast runtime configuration, handlers.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use workers::{Backoff, Job, JobError, Queue, RuntimeConfig};

pub const Q: &str = "test-q";

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6391".into())
}

pub fn namespace() -> String {
    format!("wt-{}", uuid::Uuid::new_v4().simple())
}

pub async fn queue() -> Queue {
    Queue::connect(&redis_url(), &namespace())
        .await
        .expect("redis reachable")
}

/// A plain connection to the same Redis, to look at keys directly.
pub async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

pub fn config(name: &str) -> RuntimeConfig {
    let mut c = RuntimeConfig::new(Q, name);
    c.concurrency = 50;
    c.backoff = Backoff {
        base: Duration::from_millis(10),
        max: Duration::from_millis(50),
    };
    c.postpone_backoff = Backoff {
        base: Duration::from_millis(10),
        max: Duration::from_millis(40),
    };
    c.heartbeat = Duration::from_millis(100);
    c.dead_after = Duration::from_millis(400);
    c.poll_interval = Duration::from_millis(10);
    c
}

pub type Handler = BoxFuture<'static, Result<(), JobError>>;

/// A handler that succeeds at once.
pub fn noop() -> impl tower::Service<Job, Response = (), Error = JobError, Future = Handler> + Clone
{
    tower::service_fn(|_job: Job| -> Handler { Box::pin(async { Ok(()) }) })
}

/// A handler that counts its calls and never finishes.
pub fn hang(
    calls: Arc<AtomicU32>,
    started: Arc<tokio::sync::Notify>,
) -> impl tower::Service<Job, Response = (), Error = JobError, Future = Handler> + Clone {
    tower::service_fn(move |_job: Job| -> Handler {
        let (calls, started) = (calls.clone(), started.clone());
        Box::pin(async move {
            calls.fetch_add(1, Ordering::SeqCst);
            started.notify_one();
            std::future::pending::<()>().await;
            Ok(())
        })
    })
}

pub async fn stop_after(rx: tokio::sync::oneshot::Receiver<()>) {
    let _ = rx.await;
}

/// Polls `cond` every 10 ms until it holds; panics with `what` at `deadline`.
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + deadline;
    while !cond().await {
        assert!(tokio::time::Instant::now() < until, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
