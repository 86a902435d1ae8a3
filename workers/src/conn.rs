//! The connection every [`Queue`] call goes through: one Redis behind a
//! reconnecting `ConnectionManager`, or a Redis Cluster behind the redis
//! crate's cluster client, which routes each command (and each script, by
//! its first key) to the node that owns its hash slot.
//!
//! A cluster is chosen by the URL: a `redis+cluster://` (or
//! `rediss+cluster://`) scheme with a comma-separated node list, or several
//! comma-separated `redis://` URLs. One node is enough for the client to
//! discover the others; listing more survives one of them being down at
//! start.
//!
//! [`Queue`]: crate::Queue

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::error::Error;

/// One Redis, or a cluster of them. Cheap to clone; clones share the
/// underlying multiplexed connections. Every command and pipeline of the
/// redis crate runs on it (it is a `redis::aio::ConnectionLike`); in a
/// cluster a pipeline must keep to one hash slot.
#[derive(Clone)]
pub enum Conn {
    /// One Redis.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl Conn {
    /// Connects to `url`: a cluster for a `redis+cluster://` URL or several
    /// comma-separated URLs, else one Redis.
    ///
    /// # Errors
    /// When the URL is malformed or Redis cannot be reached.
    pub async fn open(url: &str) -> Result<Self, Error> {
        match cluster_nodes(url)? {
            None => {
                let client = redis::Client::open(url)?;
                // The manager reconnects by itself after Redis restarts; the
                // cap keeps its backoff between attempts short so a worker is
                // back within about a second of Redis.
                let config = ConnectionManagerConfig::new().set_max_delay(Duration::from_secs(1));
                Ok(Self::Single(
                    ConnectionManager::new_with_config(client, config).await?,
                ))
            }
            Some(nodes) => {
                // The cluster client reconnects to a node that comes back and
                // re-reads the slot map when a slot moves (MOVED / ASK).
                let client = ClusterClient::builder(nodes)
                    .connection_timeout(Duration::from_secs(2))
                    .response_timeout(Duration::from_secs(5))
                    .retries(4)
                    .max_retry_wait(1_000)
                    .build()?;
                Ok(Self::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// Whether this is a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

/// The node URLs of a cluster URL, or `None` for a single Redis.
fn cluster_nodes(url: &str) -> Result<Option<Vec<String>>, Error> {
    let url = url.trim();
    for (scheme, plain) in [
        ("redis+cluster://", "redis://"),
        ("rediss+cluster://", "rediss://"),
    ] {
        if let Some(rest) = url.strip_prefix(scheme) {
            // `user:pass@h1:p1,h2:p2/`: the credentials go to every node
            let (auth, hosts) = match rest.rsplit_once('@') {
                Some((auth, hosts)) => (format!("{auth}@"), hosts),
                None => (String::new(), rest),
            };
            let nodes: Vec<String> = hosts
                .trim_end_matches('/')
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(|h| format!("{plain}{auth}{h}"))
                .collect();
            if nodes.is_empty() {
                return Err(Error::Config(format!("{scheme} URL lists no node")));
            }
            return Ok(Some(nodes));
        }
    }
    if url.contains(',') {
        let nodes: Vec<String> = url
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect();
        return Ok(Some(nodes));
    }
    Ok(None)
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cluster_nodes;

    #[test]
    fn a_cluster_is_told_by_its_scheme_or_by_several_urls() {
        assert_eq!(cluster_nodes("redis://127.0.0.1:6379").unwrap(), None);
        assert_eq!(
            cluster_nodes("redis+cluster://a:1,b:2/").unwrap(),
            Some(vec!["redis://a:1".to_owned(), "redis://b:2".to_owned()])
        );
        assert_eq!(
            cluster_nodes("rediss+cluster://u:p@a:1,b:2").unwrap(),
            Some(vec![
                "rediss://u:p@a:1".to_owned(),
                "rediss://u:p@b:2".to_owned()
            ])
        );
        assert_eq!(
            cluster_nodes("redis://a:1, redis://b:2").unwrap(),
            Some(vec!["redis://a:1".to_owned(), "redis://b:2".to_owned()])
        );
        assert!(cluster_nodes("redis+cluster://").is_err());
    }
}
