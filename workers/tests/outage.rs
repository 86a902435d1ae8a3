//! Outages: of a dependency of the handlers, and of Redis itself.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{config, eventually, handler, noop, queue, start, Q};
use tokio::time::Instant;
use workers::{JobError, JobState, PushOptions, Queue, RedisBackend};

#[path = "support/ports.rs"]
mod ports;
use ports::free_port;

#[tokio::test]
async fn an_unavailable_dependency_uses_no_attempt_and_pauses_claims() {
    let q = queue().await;
    // one attempt each: had the postponement used it, the job could not run again
    let opts = PushOptions {
        max_attempts: 1,
        ..PushOptions::default()
    };
    let first = q.push(Q, &0, opts.clone()).await.unwrap();
    let calls: Arc<Mutex<Vec<(u32, Instant, Instant)>>> = Arc::default();
    let c = calls.clone();
    let h = handler(move |_: u32, attempt| {
        let c = c.clone();
        async move {
            let start = Instant::now();
            let n = c.lock().unwrap().len();
            c.lock().unwrap().push((attempt, start, Instant::now()));
            if n < 3 {
                Err(JobError::unavailable("database down"))
            } else {
                Ok(())
            }
        }
    });
    let mut cfg = config();
    cfg.concurrency = 1;
    cfg.unavailable_pause = Duration::from_millis(150);
    let worker = start(&RedisBackend::new(q.clone(), cfg), "w", h);
    eventually("the first postponement", Duration::from_secs(5), || async {
        !calls.lock().unwrap().is_empty()
    })
    .await;
    for i in 1..3 {
        q.push(Q, &i, opts.clone()).await.unwrap();
    }
    let counts = q
        .wait_idle(Q, Duration::from_secs(10))
        .await
        .unwrap()
        .expect("drained");
    worker.stop().await;

    assert_eq!((counts.completed_total, counts.dead), (3, 0));
    assert_eq!(
        counts.failed_total, 0,
        "an outage is not a failure of the job"
    );
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 6, "three postponements, then three runs");
    assert!(
        calls.iter().all(|c| c.0 == 1),
        "every run is attempt 1: {calls:?}"
    );
    for pair in calls.windows(2).take(3) {
        let gap = pair[1].1.duration_since(pair[0].2);
        assert!(
            gap >= Duration::from_millis(140),
            "claims paused after an outage: {gap:?}"
        );
    }
    let job = q.job(&first).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.attempts, job.postponed),
        (JobState::Done, 1, 3)
    );
    assert!(
        q.attempts(&first).await.unwrap().is_empty(),
        "no failed attempt recorded"
    );
}

/// A Redis of its own on a free port, persisted to an append-only file so it
/// comes back with its data after a kill.
struct OwnRedis {
    port: u16,
    dir: std::path::PathBuf,
    child: std::process::Child,
}

impl OwnRedis {
    fn start(port: u16, dir: &std::path::Path) -> Self {
        let child = std::process::Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server installed");
        Self {
            port,
            dir: dir.to_owned(),
            child,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&self) {
        let client = redis::Client::open(self.url()).unwrap();
        eventually("redis-server answers", Duration::from_secs(10), || async {
            match client.get_multiplexed_async_connection().await {
                Ok(mut c) => redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok(),
                Err(_) => false,
            }
        })
        .await;
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn a_redis_restart_mid_run_loses_no_job_and_runs_none_twice() {
    let dir =
        std::env::temp_dir().join(format!("workers-outage-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let mut redis = OwnRedis::start(port, &dir);
    redis.wait_ready().await;
    let q = Queue::connect(&redis.url(), "outage").await.unwrap();

    let n = 3000usize;
    let payloads: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    q.push_many_raw(Q, &payloads, PushOptions::default())
        .await
        .unwrap();

    // per job: how often it ran, and when its first run started and ended
    let runs: Arc<Vec<AtomicU32>> = Arc::new((0..n).map(|_| AtomicU32::new(0)).collect());
    let spans: Arc<Mutex<Vec<(usize, Instant, Instant)>>> = Arc::default();
    let (r, s) = (runs.clone(), spans.clone());
    let h = handler(move |i: usize, _| {
        let (r, s) = (r.clone(), s.clone());
        async move {
            let start = Instant::now();
            tokio::time::sleep(Duration::from_millis(2)).await;
            r[i].fetch_add(1, Ordering::SeqCst);
            s.lock().unwrap().push((i, start, Instant::now()));
            Ok(())
        }
    });
    let mut workers = Vec::new();
    for name in ["w1", "w2"] {
        let mut cfg = config();
        cfg.concurrency = 8;
        cfg.heartbeat = Duration::from_millis(50);
        cfg.dead_after = Duration::from_millis(300);
        workers.push(start(&RedisBackend::new(q.clone(), cfg), name, h.clone()));
    }

    let done = || runs.iter().filter(|r| r.load(Ordering::SeqCst) > 0).count();
    eventually(
        "a third of the backlog ran",
        Duration::from_secs(30),
        || async { done() >= n / 3 },
    )
    .await;
    let down_at = Instant::now();
    redis.kill();
    // Down for longer than `dead_after`, so every heartbeat is stale when it
    // returns, and longer than the connection manager's reconnect retries
    // (about 3.5 s), during which calls wait rather than fail: the workers
    // must live through failed claims, acks and heartbeats (apalis would end
    // a worker whose backend returned an error).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ran_while_down = done();
    let redis = OwnRedis::start(port, &dir);
    redis.wait_ready().await;
    let up_at = Instant::now();

    let until = Instant::now() + Duration::from_secs(60);
    let counts = loop {
        if let Ok(Some(c)) = q.wait_idle(Q, Duration::from_secs(1)).await {
            break c;
        }
        assert!(
            Instant::now() < until,
            "the backlog drains after the restart"
        );
    };
    for w in workers {
        w.stop().await;
    }

    assert!(ran_while_down < n, "the outage hit mid-run");
    let never: Vec<usize> = (0..n)
        .filter(|&i| runs[i].load(Ordering::SeqCst) == 0)
        .collect();
    assert!(never.is_empty(), "lost jobs: {never:?}");
    // a second run is only excusable for a job running when Redis went away
    let spans = spans.lock().unwrap().clone();
    let in_outage: HashSet<usize> = spans
        .iter()
        .filter(|(_, start, end)| *start <= up_at && *end >= down_at)
        .map(|(i, _, _)| *i)
        .collect();
    let twice: Vec<usize> = (0..n)
        .filter(|&i| runs[i].load(Ordering::SeqCst) > 1)
        .collect();
    assert!(
        twice.iter().all(|i| in_outage.contains(i)),
        "ran twice without excuse: {twice:?}"
    );
    let counts = q.counts(Q).await.unwrap_or(counts);
    assert_eq!(counts.outstanding(), 0, "{counts:?}");
    assert_eq!(
        (counts.dead, counts.completed_total),
        (0, n as u64),
        "{counts:?}"
    );
}

#[tokio::test]
async fn heartbeats_are_stamped_with_the_redis_clock() {
    // Heartbeats are compared with the Redis clock by whoever reaps; stamped
    // with a worker's own clock, a worker running behind would look dead
    // while alive. The clocks cannot be skewed here, so this checks the
    // stamp lies within Redis `TIME` readings taken around it.
    let q = queue().await;
    let before = q.server_ms().await.unwrap();
    let worker = start(
        &RedisBackend::<String>::new(q.clone(), config()),
        "w",
        noop(),
    );
    eventually("the worker joined", Duration::from_secs(5), || async {
        !q.workers(Q).await.unwrap().is_empty()
    })
    .await;
    let after = q.server_ms().await.unwrap();
    let beat = q.workers(Q).await.unwrap()[0].last_heartbeat_ms;
    worker.stop().await;
    assert!(
        before <= beat && beat <= after,
        "{before} <= {beat} <= {after}"
    );
}
