//! Leases: mutual exclusion across the pool for work on one resource (for
//! example one CRM record), so two jobs for it never interleave. A lease has
//! a short time to live and is renewed while held, so a crashed holder frees
//! it within one `ttl`.

use std::time::Duration;

use crate::error::Error;
use crate::queue::Queue;

/// A held lease. Released on [`Lease::release`], or (best effort) on drop.
pub struct Lease {
    queue: Queue,
    key: String,
    token: String,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

async fn call(
    queue: &Queue,
    key: &str,
    token: &str,
    op: &str,
    ttl: Duration,
) -> Result<bool, Error> {
    let mut conn = queue.conn.clone();
    let n: i64 = queue
        .scripts
        .lease
        .key(key)
        .arg(token)
        .arg(op)
        .arg(ttl.as_millis() as u64)
        .invoke_async(&mut conn)
        .await?;
    Ok(n == 1)
}

impl Queue {
    /// Takes the lease `name`, waiting up to `wait` for its holder to let go.
    /// Returns `None` if it is still held then.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn lease(
        &self,
        name: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Option<Lease>, Error> {
        let key = self.keys.lease(name);
        let token = uuid::Uuid::new_v4().to_string();
        let until = tokio::time::Instant::now() + wait;
        loop {
            if call(self, &key, &token, "acquire", ttl).await? {
                break;
            }
            if tokio::time::Instant::now() >= until {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (queue, k, t) = (self.clone(), key.clone(), token.clone());
        let renewer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                match call(&queue, &k, &t, "renew", ttl).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(lease = %k, "lease lost while held");
                        return;
                    }
                    Err(e) => tracing::warn!(lease = %k, error = %e, "renewing a lease failed"),
                }
            }
        });
        Ok(Some(Lease {
            queue: self.clone(),
            key,
            token,
            renewer: Some(renewer),
        }))
    }
}

impl Lease {
    /// Lets go of the lease.
    ///
    /// # Errors
    /// When Redis fails (the lease then expires by itself).
    pub async fn release(mut self) -> Result<(), Error> {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        call(
            &self.queue,
            &self.key,
            &self.token,
            "release",
            Duration::ZERO,
        )
        .await?;
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
            let (queue, key, token) = (self.queue.clone(), self.key.clone(), self.token.clone());
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = call(&queue, &key, &token, "release", Duration::ZERO).await;
                });
            }
        }
    }
}
