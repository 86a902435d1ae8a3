//! The MongoDB store: contacts, their links to CRM records, and sync logs.
//! Errors are `anyhow` with context, except the few a caller must tell apart
//! ([`StoreError`]). Every filter is built from typed values, never from
//! request JSON, so operator injection has no way in.

mod batch;
mod claims;
mod contacts;
mod customers;
mod first_sync;
mod grouped;
mod ids;
mod inbound;
mod indexes;
mod links;
mod logs;
mod marks;
mod ops;
mod outbox;
mod routing;

use anyhow::Context;
use bson::doc;
use mongodb::options::IndexOptions;
use mongodb::{Client, Collection, Database, IndexModel};

pub use contacts::{Contact, ContactPatch, NewContact};
pub use customers::{Connection, Customer, SyncHealth};
pub use first_sync::{FirstSyncCount, FirstSyncPhase, FirstSyncRecord};
pub use inbound::{PollCursor, ScanProgress};
pub use links::Link;
pub use logs::{Direction, SyncLog};
pub use ops::{LogFilter, ProviderHealth};
pub use outbox::{Outbox, OutboxJob};
pub use routing::Customers;

/// How long opening a connection, or a server monitor's check, may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long an operation waits for MongoDB to be reachable before it fails.
const SERVER_SELECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(800);

/// A failure a caller reacts to.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique index refused the write.
    #[error("{0}")]
    Conflict(String),
    /// Anything else (the database is unreachable, …).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Whether a database error means MongoDB is unreachable, or cannot serve
/// writes for now (stepping down, shutting down), rather than refusing this
/// one operation. Callers wait such an outage out instead of failing.
pub fn is_outage(e: &anyhow::Error) -> bool {
    use mongodb::error::ErrorKind;
    e.chain().any(|cause| {
        cause
            .downcast_ref::<mongodb::error::Error>()
            .is_some_and(|m| {
                matches!(
                    *m.kind,
                    ErrorKind::Io(_)
                        | ErrorKind::ServerSelection { .. }
                        | ErrorKind::ConnectionPoolCleared { .. }
                        | ErrorKind::DnsResolve { .. }
                ) || m.contains_label("RetryableWriteError")
                    || m.contains_label("TransientTransactionError")
            })
    })
}

/// Handle on the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Database,
    contacts: Collection<Contact>,
    links: Collection<Link>,
    logs: Collection<SyncLog>,
    cursors: Collection<PollCursor>,
    customers: Collection<Customer>,
    /// Small writes and reads shared by concurrent callers (group commit).
    groups: grouped::Groups,
}

/// Commands this process has sent to MongoDB (every store connected after
/// [`monitor_commands`]).
static COMMANDS_SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many commands this process has sent to MongoDB so far, so a
/// benchmark can count the database operations a piece of work costs
/// (zero unless [`monitor_commands`] was called before connecting).
pub fn commands_sent() -> u64 {
    COMMANDS_SENT.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether stores connected from now on watch their commands. Off by
/// default: a watching driver turns every command and every reply into a
/// parsed document for the watcher, which cost `bench-sync` about a tenth
/// of its process's time.
static MONITOR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether [`profile_commands`] switched timing on: checked before the
/// lock, so a process that never profiles takes no lock per command.
static PROFILING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Per command name: how many answered and their summed round trip, kept
/// only once [`profile_commands`] switched it on (for benchmarks).
static COMMAND_TIMES: std::sync::Mutex<Option<std::collections::BTreeMap<String, (u64, u64)>>> =
    std::sync::Mutex::new(None);

/// Counts (see [`commands_sent`]) the commands of every store connected
/// from now on.
pub fn monitor_commands() {
    MONITOR.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Starts timing every command by name (see [`command_profile`]), for the
/// stores connected after [`monitor_commands`].
pub fn profile_commands() {
    let mut times = COMMAND_TIMES.lock().unwrap_or_else(|p| p.into_inner());
    times.get_or_insert_with(Default::default);
    PROFILING.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Per command name, since [`profile_commands`]: `(name, count, total µs)`.
pub fn command_profile() -> Vec<(String, u64, u64)> {
    let times = COMMAND_TIMES.lock().unwrap_or_else(|p| p.into_inner());
    times
        .iter()
        .flatten()
        .map(|(name, (n, us))| (name.clone(), *n, *us))
        .collect()
}

fn command_event(event: mongodb::event::command::CommandEvent) {
    use mongodb::event::command::CommandEvent;
    let (name, took) = match event {
        CommandEvent::Started(_) => {
            COMMANDS_SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        _ if !PROFILING.load(std::sync::atomic::Ordering::Relaxed) => return,
        CommandEvent::Succeeded(e) => (e.command_name, e.duration),
        CommandEvent::Failed(e) => (e.command_name, e.duration),
        _ => return,
    };
    let mut times = COMMAND_TIMES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(times) = times.as_mut() {
        let entry = times.entry(name).or_default();
        entry.0 += 1;
        entry.1 += u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    }
}

impl Store {
    /// The server's operation counters (`serverStatus.opcounters`: inserted
    /// documents, queries, update and delete statements, getMores, other
    /// commands), for benchmarks to count what a piece of work cost; only
    /// in a build with the `bench` feature (the dev binary's).
    ///
    /// # Errors
    /// When the database fails or does not report them.
    #[cfg(feature = "bench")]
    pub async fn server_opcounters(&self) -> anyhow::Result<Vec<(String, i64)>> {
        let status = self
            .db
            .client()
            .database("admin")
            .run_command(doc! { "serverStatus": 1 })
            .await
            .context("reading serverStatus")?;
        let counters = status
            .get_document("opcounters")
            .context("serverStatus has no opcounters")?;
        Ok(counters
            .iter()
            .map(|(name, v)| {
                let n = match v {
                    bson::Bson::Int32(n) => i64::from(*n),
                    bson::Bson::Int64(n) => *n,
                    bson::Bson::Double(n) => *n as i64,
                    _ => 0,
                };
                (name.clone(), n)
            })
            .collect())
    }

    /// Connects and makes sure the indexes exist (idempotent).
    ///
    /// # Errors
    /// When the URI is malformed, the server is unreachable or an index
    /// cannot be created.
    pub async fn connect(uri: &str, db: &str) -> anyhow::Result<Self> {
        Self::connect_with(uri, db, None).await
    }

    /// [`Self::connect`], keeping sync log entries for `log_retention`
    /// (zero: forever; `None`: leave the bound as it is, for tools that only
    /// read). The bound is a TTL index, enforced by the server without
    /// scanning.
    ///
    /// # Errors
    /// As [`Self::connect`].
    pub async fn connect_with(
        uri: &str,
        db: &str,
        log_retention: Option<std::time::Duration>,
    ) -> anyhow::Result<Self> {
        let mut options = mongodb::options::ClientOptions::parse(uri)
            .await
            .with_context(|| "MONGODB_URI is not a valid MongoDB connection string")?;
        // The driver waits 30 s for a server by default: a request or a job
        // would hang that long in an outage. Fail fast instead (the api
        // answers 503, a job waits without using an attempt), unless the
        // URI says otherwise (serverSelectionTimeoutMS).
        options
            .server_selection_timeout
            .get_or_insert(SERVER_SELECTION_TIMEOUT);
        // Not shortened: the driver's server monitor uses it as the time a
        // `hello` may take, and a busy server answering late would be taken
        // for a dead one, its connections interrupted mid-write (the driver
        // then retries writes that had landed). Connection refusals, what an
        // outage looks like here, fail at once anyway.
        options.connect_timeout.get_or_insert(CONNECT_TIMEOUT);
        if MONITOR.load(std::sync::atomic::Ordering::Relaxed) {
            options.command_event_handler =
                Some(mongodb::event::EventHandler::callback(command_event));
        }
        let client = Client::with_options(options)
            .with_context(|| "MONGODB_URI is not a valid MongoDB connection string")?;
        let db = client.database(db);
        let contacts = db.collection("contacts");
        let links = db.collection("contact_links");
        let logs = db.collection("sync_logs");
        let store = Self {
            groups: grouped::Groups::start(&db, &contacts, &links, &logs),
            contacts,
            links,
            logs,
            cursors: db.collection("sync_cursors"),
            customers: db.collection("customers"),
            db,
        };
        store.ensure_indexes().await?;
        if let Some(keep) = log_retention {
            store.ensure_log_retention(keep).await?;
        }
        Ok(store)
    }

    /// Documents in `contacts`, `contact_links` and `sync_logs` (estimated
    /// from collection metadata, no scan), for the soak benchmark.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn collection_counts(&self) -> anyhow::Result<(u64, u64, u64)> {
        Ok((
            self.contacts.estimated_document_count().await?,
            self.links.estimated_document_count().await?,
            self.logs.estimated_document_count().await?,
        ))
    }

    /// Checks that the server answers.
    ///
    /// # Errors
    /// When it does not.
    pub async fn ping(&self) -> anyhow::Result<()> {
        self.db.run_command(doc! { "ping": 1 }).await?;
        Ok(())
    }

    /// The TTL index that bounds `sync_logs`: created, changed in place
    /// (`collMod`) when the retention changed, dropped for "forever".
    async fn ensure_log_retention(&self, keep: std::time::Duration) -> anyhow::Result<()> {
        const NAME: &str = "sync_logs_ttl";
        if keep.is_zero() {
            if let Err(e) = self.logs.drop_index(NAME).await {
                tracing::debug!(error = %e, "no sync log TTL index to drop");
            }
            return Ok(());
        }
        let ttl = IndexModel::builder()
            .keys(doc! { "at": 1 })
            .options(
                IndexOptions::builder()
                    .expire_after(keep)
                    .name(NAME.to_owned())
                    .build(),
            )
            .build();
        if let Err(e) = self.logs.create_index(ttl).await {
            // An index of that name with another expiry: change it in place.
            tracing::info!(error = %e, "sync log retention changed; updating the TTL index");
            self.db
                .run_command(doc! {
                    "collMod": "sync_logs",
                    "index": { "name": NAME, "expireAfterSeconds": keep.as_secs() as i64 },
                })
                .await
                .context("changing the sync log retention (collMod)")?;
        }
        Ok(())
    }
}

/// Whether a MongoDB error is a unique-index violation (E11000).
pub(crate) fn is_duplicate_key(err: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == 11000,
        ErrorKind::Command(e) => e.code == 11000,
        ErrorKind::InsertMany(e) => e
            .write_errors
            .as_ref()
            .is_some_and(|w| w.iter().any(|e| e.code == 11000)),
        _ => err.to_string().contains("E11000"),
    }
}

/// The `n` of a `$group` stage's output (the server may give any number type).
pub(crate) fn count_field(g: &bson::Document) -> u64 {
    match g.get("n") {
        Some(bson::Bson::Int32(n)) => u64::try_from(*n).unwrap_or(0),
        Some(bson::Bson::Int64(n)) => u64::try_from(*n).unwrap_or(0),
        Some(bson::Bson::Double(n)) => *n as u64,
        _ => 0,
    }
}
