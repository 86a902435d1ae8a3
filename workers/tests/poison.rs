//! Jobs that kill their workers, and dead-letter hooks that fail.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{config, eventually, handler, hang, queue, start, Q};
use futures::future::BoxFuture;
use workers::{DeadLetter, Job, JobError, JobState, PushOptions, RedisBackend};

/// Counts its calls; fails the first `fail_first` of them as if the
/// application's database were down.
struct Hook {
    calls: Arc<AtomicU32>,
    fail_first: u32,
}

impl DeadLetter for Hook {
    fn on_dead<'a>(
        &'a self,
        _job: &'a Job,
        _e: &'a JobError,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n <= self.fail_first {
                Err(JobError::unavailable("database down"))
            } else {
                Ok(())
            }
        })
    }
}

/// The errors of a job's attempt log, oldest first.
async fn attempt_errors(q: &workers::Queue, id: &str) -> Vec<String> {
    q.attempts(id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.error)
        .collect()
}

/// Starts a worker named `name` over a hanging handler, waits until it runs
/// the job, then kills it without leaving the pool (a crash).
async fn crash_while_running(q: &workers::Queue, name: &str, calls: &Arc<AtomicU32>) {
    let started = Arc::new(tokio::sync::Notify::new());
    let backend = RedisBackend::<String>::new(q.clone(), config());
    let worker = start(&backend, name, hang(calls.clone(), started.clone()));
    started.notified().await;
    worker.crash().await;
}

#[tokio::test]
async fn a_job_that_kills_its_worker_every_time_is_dead_lettered_after_max_stalls() {
    let q = queue().await;
    let opts = PushOptions {
        max_attempts: 10,
        ..PushOptions::default()
    };
    let id = q.push(Q, &"poison", opts).await.unwrap();
    let runs = Arc::new(AtomicU32::new(0));

    // a's death is noticed by its peer b (which then dies under it too), and
    // b's by its own next start under the same name
    crash_while_running(&q, "a", &runs).await;
    crash_while_running(&q, "b", &runs).await;
    let job = q.job(&id).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.stalls, job.attempts),
        (JobState::Running, 1, 2)
    );

    let hooks = Arc::new(AtomicU32::new(0));
    let mut cfg = config();
    cfg.max_stalls = 2;
    let started = Arc::new(tokio::sync::Notify::new());
    let backend = RedisBackend::<String>::new(q.clone(), cfg).on_dead(Arc::new(Hook {
        calls: hooks.clone(),
        fail_first: 0,
    }));
    let worker = start(&backend, "b", hang(runs.clone(), started));
    let counts = q
        .wait_idle(Q, Duration::from_secs(10))
        .await
        .unwrap()
        .expect("settled");
    worker.stop().await;

    assert_eq!(counts.dead, 1);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "never run after its second stall"
    );
    assert_eq!(
        hooks.load(Ordering::SeqCst),
        1,
        "the application still hears of it"
    );
    let job = q.job(&id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(job.error.as_deref(), Some("worker died while running it"));
    assert_eq!(
        (job.stalls, job.attempts),
        (2, 2),
        "the stalled attempts stay counted"
    );
    let log = attempt_errors(&q, &id).await;
    assert_eq!(
        log,
        [
            "worker a stopped while running it",
            "worker b stopped while running it"
        ]
    );
}

#[tokio::test]
async fn a_job_whose_last_attempt_died_with_its_worker_is_not_run_again() {
    let q = queue().await;
    let opts = PushOptions {
        max_attempts: 1,
        ..PushOptions::default()
    };
    let id = q.push(Q, &"last try", opts).await.unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    crash_while_running(&q, "a", &runs).await;

    let started = Arc::new(tokio::sync::Notify::new());
    let backend = RedisBackend::<String>::new(q.clone(), config());
    let worker = start(&backend, "peer", hang(runs.clone(), started));
    let counts = q
        .wait_idle(Q, Duration::from_secs(10))
        .await
        .unwrap()
        .expect("settled");
    worker.stop().await;
    assert_eq!(counts.dead, 1);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let job = q.job(&id).await.unwrap().unwrap();
    assert_eq!((job.stalls, job.attempts), (1, 1));
    assert_eq!(job.error.as_deref(), Some("worker died while running it"));
}

#[tokio::test]
async fn a_failing_dead_letter_hook_is_called_again_before_the_job_is_parked() {
    let q = queue().await;
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let refuse = handler(move |_: String, _| {
        r.fetch_add(1, Ordering::SeqCst);
        async { Err(JobError::permanent("refused")) }
    });
    let id = q.push(Q, &"bad", PushOptions::default()).await.unwrap();
    let hooks = Arc::new(AtomicU32::new(0));
    let mut cfg = config();
    // the hook's failures pause claims; keep the test short
    cfg.unavailable_pause = Duration::from_millis(20);
    let backend = RedisBackend::new(q.clone(), cfg).on_dead(Arc::new(Hook {
        calls: hooks.clone(),
        fail_first: 2,
    }));
    let worker = start(&backend, "w", refuse);
    // while the hook fails, the job is not parked dead
    eventually("the hook failed once", Duration::from_secs(5), || async {
        hooks.load(Ordering::SeqCst) >= 1
    })
    .await;
    let job = q.job(&id).await.unwrap().unwrap();
    assert_ne!(
        job.state,
        JobState::Dead,
        "not dead while the app's records are unmarked"
    );

    let counts = q
        .wait_idle(Q, Duration::from_secs(10))
        .await
        .unwrap()
        .expect("settled");
    worker.stop().await;
    assert_eq!(counts.dead, 1);
    assert_eq!(hooks.load(Ordering::SeqCst), 3, "called until it succeeded");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the handler is not run again"
    );
    let job = q.job(&id).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Dead, 1));
    assert_eq!(job.error.as_deref(), Some("refused"));
}

#[tokio::test]
async fn a_crash_among_many_jobs_buries_only_the_job_that_caused_it() {
    let q = queue().await;
    let opts = || PushOptions {
        max_attempts: 10,
        ..PushOptions::default()
    };
    let poison = q.push(Q, &"poison".to_string(), opts()).await.unwrap();
    let mut bystanders = Vec::new();
    for i in 0..9 {
        bystanders.push(q.push(Q, &format!("job {i}"), opts()).await.unwrap());
    }

    // first crash: the worker dies running all ten; none of them is named
    let runs = Arc::new(AtomicU32::new(0));
    let started = Arc::new(tokio::sync::Notify::new());
    let backend = RedisBackend::<String>::new(q.clone(), config());
    let worker = start(&backend, "w", hang(runs.clone(), started));
    eventually("all ten run", Duration::from_secs(10), || async {
        runs.load(Ordering::SeqCst) == 10
    })
    .await;
    worker.crash().await;

    // then workers on which the poison job kills its worker each time it
    // runs: each crash is a fresh life of "w", which recovers its claims
    let mut cfg = config();
    cfg.max_stalls = 2;
    let alone_each_time = Arc::new(AtomicU32::new(0));
    let bystander_runs = Arc::new(AtomicU32::new(0));
    for life in 0..3 {
        let started = Arc::new(tokio::sync::Notify::new());
        let (s, b) = (started.clone(), bystander_runs.clone());
        let h = handler(move |job: String, _| {
            let (s, b) = (s.clone(), b.clone());
            async move {
                if job == "poison" {
                    s.notify_one();
                    std::future::pending::<()>().await;
                }
                b.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        });
        let backend = RedisBackend::<String>::new(q.clone(), cfg.clone());
        let worker = start(&backend, "w", h);
        if life == 2 {
            // its second stall: dead-lettered without running
            let counts = q
                .wait_idle(Q, Duration::from_secs(10))
                .await
                .unwrap()
                .expect("settled");
            worker.stop().await;
            assert_eq!((counts.dead, counts.done), (1, 9));
            break;
        }
        tokio::time::timeout(Duration::from_secs(10), started.notified())
            .await
            .expect("the poison job runs again");
        if q.counts(Q).await.unwrap().running == 1 {
            alone_each_time.fetch_add(1, Ordering::SeqCst);
        }
        worker.crash().await;
    }

    assert_eq!(
        alone_each_time.load(Ordering::SeqCst),
        2,
        "the poison job ran alone after the first crash"
    );
    assert_eq!(bystander_runs.load(Ordering::SeqCst), 9, "each once more");
    for id in &bystanders {
        let job = q.job(id).await.unwrap().unwrap();
        assert_eq!(
            (job.state, job.stalls, job.attempts),
            (JobState::Done, 0, 1),
            "{id}: the attempt the crash took was given back"
        );
    }
    let job = q.job(&poison).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.stalls, job.attempts),
        (JobState::Dead, 2, 2),
        "only the runs alone count"
    );
    let log = attempt_errors(&q, &poison).await;
    assert_eq!(
        log,
        [
            "worker w stopped while running it and 9 other jobs: it runs alone next",
            "worker w stopped while running it",
            "worker w stopped while running it",
        ]
    );
}
