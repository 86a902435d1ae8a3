//! Group commit: many callers' small writes (and reads) go to MongoDB as one
//! command. A worker running 50 jobs at once would otherwise send 50
//! sync-log inserts and 100 link updates one by one; here a request waits
//! only while an earlier round trip of the same kind is in flight, and every
//! request that arrived meanwhile goes out together in the next one. An idle
//! process sends each request at once, alone, so nothing waits for a timer.
//!
//! Written here because what is grouped is ours to say: which requests may
//! share a command, and how one command's reply is split back per request
//! (a `writeErrors` entry names the statement it belongs to).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Semaphore};

/// A request and where its answer goes.
type Slot<T, R> = (T, oneshot::Sender<R>);

/// Sends requests of one kind in groups, through `run`.
pub(crate) struct Batcher<T, R> {
    tx: mpsc::UnboundedSender<Slot<T, R>>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts the task that groups requests: at most `max` per group and
    /// `in_flight` groups at a time. `run` answers a group in order, one
    /// answer per request. The task ends when the last handle is dropped.
    pub(crate) fn spawn<F, Fut>(max: usize, in_flight: usize, run: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        Self::spawn_lingering(max, in_flight, Duration::ZERO, run)
    }

    /// [`Self::spawn`], and a group waits up to `linger` after its first
    /// request for more (unless it fills up first): for writes nobody
    /// waits on in a hurry, which then go in groups even when they come in
    /// one at a time.
    pub(crate) fn spawn_lingering<F, Fut>(
        max: usize,
        in_flight: usize,
        linger: Duration,
        run: F,
    ) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<Slot<T, R>>();
        let run = Arc::new(run);
        let slots = Arc::new(Semaphore::new(in_flight.max(1)));
        tokio::spawn(async move {
            loop {
                // Waiting for a free slot first is what groups requests:
                // they pile up in the channel while every slot is busy.
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let Some(first) = rx.recv().await else {
                    return;
                };
                let mut group = vec![first];
                let until = tokio::time::Instant::now() + linger;
                while group.len() < max.max(1) {
                    match rx.try_recv() {
                        Ok(slot) => group.push(slot),
                        Err(_) if linger.is_zero() => break,
                        Err(_) => match tokio::time::timeout_at(until, rx.recv()).await {
                            Ok(Some(slot)) => group.push(slot),
                            // the time is up, or every handle is gone
                            Ok(None) | Err(_) => break,
                        },
                    }
                }
                let run = Arc::clone(&run);
                tokio::spawn(async move {
                    let (requests, replies): (Vec<T>, Vec<_>) = group.into_iter().unzip();
                    let answers = run(requests).await;
                    debug_assert_eq!(answers.len(), replies.len());
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        // the caller may have given up (a job's timeout)
                        let _ = reply.send(answer);
                    }
                    drop(permit);
                });
            }
        });
        Self { tx }
    }

    /// Sends one request with whatever else is waiting; `None` when the
    /// grouping task is gone (its runtime shut down).
    pub(crate) async fn call(&self, request: T) -> Option<R> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((request, reply)).ok()?;
        answer.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn requests_arriving_during_a_round_trip_share_the_next_one() {
        let rounds = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&rounds);
        let batcher = Batcher::spawn(100, 1, move |xs: Vec<u32>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                xs.into_iter().map(|x| x * 2).collect::<Vec<_>>()
            }
        });
        let calls = (0..50).map(|i| {
            let b = batcher.clone();
            async move { b.call(i).await }
        });
        let answers = futures::future::join_all(calls).await;
        assert_eq!(
            answers,
            (0..50).map(|i| Some(i * 2)).collect::<Vec<_>>(),
            "every caller gets its own answer"
        );
        let n = rounds.load(Ordering::SeqCst);
        assert!(
            n <= 3,
            "50 concurrent requests took {n} round trips, expected them grouped"
        );
    }

    #[tokio::test]
    async fn a_lingering_group_gathers_requests_sent_one_at_a_time() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&sizes);
        let batcher = Batcher::spawn_lingering(
            100,
            1,
            std::time::Duration::from_millis(200),
            move |xs: Vec<u32>| {
                seen.lock().unwrap().push(xs.len());
                async move { xs }
            },
        );
        // five requests 10 ms apart: without lingering, five groups
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..5 {
            let b = batcher.clone();
            calls.spawn(async move { b.call(i).await });
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let mut answers: Vec<_> = calls.join_all().await;
        answers.sort_unstable();
        assert_eq!(answers, (0..5).map(Some).collect::<Vec<_>>());
        assert_eq!(*sizes.lock().unwrap(), vec![5], "one group");
    }

    #[tokio::test]
    async fn groups_are_capped() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&sizes);
        let batcher = Batcher::spawn(4, 1, move |xs: Vec<u32>| {
            seen.lock().unwrap().push(xs.len());
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                xs
            }
        });
        let calls = (0..20).map(|i| {
            let b = batcher.clone();
            async move { b.call(i).await }
        });
        futures::future::join_all(calls).await;
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 20);
        assert!(sizes.iter().all(|&s| s <= 4), "group sizes {sizes:?}");
    }
}
