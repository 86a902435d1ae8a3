//! The backend's tower layer. apalis puts a backend's layer outside the
//! application's middleware (retry, timeout, …), so it sees each job once,
//! from the claim to the end of its last attempt: it opens the job's span,
//! runs the call and the settling in it, and holds the job's concurrency slot
//! until its outcome is written.

use std::sync::Arc;
use std::task::{Context, Poll};

use apalis_core::error::BoxDynError;
use apalis_core::task::Task;
use futures::future::BoxFuture;
use futures::FutureExt;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::backend::settle;
use crate::backend::shared::{Shared, Slot};
use crate::backend::MakeSpan;
use crate::job::Job;

/// Wraps the application's service stack: see the module doc. Made by the
/// backend for each worker (apalis calls `BackendConfig::middleware`).
pub struct RedisLayer<Args> {
    shared: Arc<Shared>,
    make_span: MakeSpan<Args>,
}

impl<Args> RedisLayer<Args> {
    pub(crate) fn new(shared: Arc<Shared>, make_span: MakeSpan<Args>) -> Self {
        Self { shared, make_span }
    }
}

impl<Args> Clone for RedisLayer<Args> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            make_span: self.make_span.clone(),
        }
    }
}

impl<S, Args> Layer<S> for RedisLayer<Args> {
    type Service = RedisService<S, Args>;

    fn layer(&self, inner: S) -> Self::Service {
        RedisService {
            inner,
            shared: self.shared.clone(),
            make_span: self.make_span.clone(),
        }
    }
}

/// The service [`RedisLayer`] makes.
pub struct RedisService<S, Args> {
    inner: S,
    shared: Arc<Shared>,
    make_span: MakeSpan<Args>,
}

impl<S: Clone, Args> Clone for RedisService<S, Args> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            make_span: self.make_span.clone(),
        }
    }
}

impl<S, Args> Service<Task<Args>> for RedisService<S, Args>
where
    S: Service<Task<Args>>,
    S::Error: Into<BoxDynError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<S::Response, BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<Args>) -> Self::Future {
        let job = Job::of(&task).cloned();
        let span = (self.make_span)(&task);
        // the backend counted the slot when it handed the job over
        let slot = job.as_ref().map(|_| Slot(self.shared.clone()));
        let fut = {
            let _entered = span.enter();
            self.inner.call(task)
        };
        let shared = self.shared.clone();
        async move {
            let _slot = slot;
            let result = fut.await.map_err(Into::into);
            if let Some(job) = job {
                settle::finish(&shared, &job, result.as_ref().err()).await;
            }
            result
        }
        .instrument(span)
        .boxed()
    }
}
