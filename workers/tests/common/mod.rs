//! Helpers shared by the integration tests: a fresh namespace per test on the
//! Redis at REDIS_URL, a fast configuration, and apalis workers over the
//! backend, started and stopped the way the application does it.
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use apalis_core::backend::BackendConfig;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use workers::{Backoff, JobError, Queue, RedisBackend, WorkerConfig};

pub const Q: &str = "test-q";

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6391".into())
}

pub fn namespace() -> String {
    format!("wt-{}", uuid::Uuid::new_v4().simple())
}

pub async fn queue() -> Queue {
    queue_in(&namespace()).await
}

pub async fn queue_in(ns: &str) -> Queue {
    Queue::connect(&redis_url(), ns)
        .await
        .expect("redis reachable")
}

/// A plain connection to the same Redis (or Redis Cluster), to look at
/// keys directly.
pub async fn raw(url: &str) -> workers::RedisConn {
    workers::RedisConn::open(url)
        .await
        .expect("redis reachable")
}

pub fn config() -> WorkerConfig {
    let mut c = WorkerConfig::new(Q);
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

/// A job handler: the payload and the attempt apalis reports for it.
pub type Handler<A> = Arc<dyn Fn(A, u32) -> BoxFuture<'static, Result<(), JobError>> + Send + Sync>;

pub fn handler<A, F, Fut>(f: F) -> Handler<A>
where
    F: Fn(A, u32) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), JobError>> + Send + 'static,
{
    Arc::new(move |a, n| Box::pin(f(a, n)))
}

/// Succeeds at once.
pub fn noop<A: Send + 'static>() -> Handler<A> {
    handler(|_: A, _| async { Ok(()) })
}

/// Counts its calls and never finishes.
pub fn hang<A: Send + 'static>(
    calls: Arc<AtomicU32>,
    started: Arc<tokio::sync::Notify>,
) -> Handler<A> {
    handler(move |_: A, _| {
        let (calls, started) = (calls.clone(), started.clone());
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            started.notify_one();
            std::future::pending::<()>().await;
            Ok(())
        }
    })
}

/// An apalis worker named `name` over `backend`, under a Monitor, as the
/// application runs it.
pub struct Worker {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    run: tokio::task::JoinHandle<Result<(), MonitorError>>,
}

pub fn start<A>(backend: &RedisBackend<A>, name: &str, h: Handler<A>) -> Worker
where
    A: Serialize + DeserializeOwned + Clone + Send + Sync + Unpin + 'static,
{
    let grace = backend.config().shutdown_grace;
    let (b, policy, worker) = (backend.clone(), backend.retry_policy(), name.to_owned());
    let monitor = Monitor::new()
        .register(move |_| {
            let h = h.clone();
            WorkerBuilder::new(worker.as_str())
                .backend(b.clone())
                .retry(policy.clone())
                .timeout(Duration::from_secs(30))
                .parallelize(tokio::spawn)
                .build(move |args: A, attempt: Attempt| h(args, attempt.current() as u32))
        })
        .shutdown_timeout(grace);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (b, worker) = (backend.clone(), name.to_owned());
    let run = tokio::spawn(async move {
        let ran = monitor
            .run_with_signal(async move {
                let _ = rx.await;
                Ok(())
            })
            .await;
        // the drain may have been cut short: give back what is left
        b.leave(&worker).await.expect("left the pool");
        ran
    });
    Worker {
        stop: Some(tx),
        run,
    }
}

impl Worker {
    /// Shuts the worker down as the application does, and waits for it.
    pub async fn stop(mut self) {
        let _ = self.stop.take().expect("running").send(());
        (&mut self.run)
            .await
            .expect("worker task")
            .expect("monitor ran");
    }

    /// Drops the worker without shutting it down: a crash.
    pub async fn crash(self) {
        self.run.abort();
        let _ = self.run.await;
    }
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
