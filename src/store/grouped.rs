//! The store's grouped round trips (see [`super::batch`]): link updates,
//! sync-log inserts, contact inserts, and the read of a contact with its
//! links, each shared by every caller that is waiting at the same time.

use bson::{doc, Document};
use mongodb::{Collection, Database};

use super::batch::Batcher;
use super::marks::SyncedMark;
use super::{Contact, Link, SyncLog};
use crate::domain::{ContactId, Provider};

/// Most requests one grouped command carries (well within MongoDB's
/// 100,000 statements and 48 MB per command).
const MAX_GROUP: usize = 256;

/// How long a group of sync log entries waits for more after its first:
/// at 100 contacts a second their two entries each then go in about one
/// `insert` per two contacts instead of one each. A job finishes at most
/// this much later.
const LOG_LINGER: std::time::Duration = std::time::Duration::from_millis(20);

/// The same for outbox clears, which nobody waits for (an outbox left in
/// place costs the relay a look, nothing more).
const CLEAR_LINGER: std::time::Duration = std::time::Duration::from_millis(100);

/// Grouped commands of one kind run at most this many at a time; the
/// requests that arrive meanwhile wait for the next group. One: a server's
/// cost is mostly per statement and per command, so fewer, fuller commands
/// win under load (`bench-sync` on secantusd-rs: 260–291 contacts/s with
/// one, 138–148 with two, in the same session), and an idle process still
/// sends each request at once.
const IN_FLIGHT: usize = 1;

/// Why one request of a group failed.
#[derive(Debug, Clone)]
pub(crate) enum GroupError {
    /// The server refused this request's statement (`writeErrors`).
    Write { code: i32, message: String },
    /// The whole command failed (the server is unreachable, …).
    Command(mongodb::error::Error),
    /// The grouping task is gone: its runtime is shutting down.
    Gone,
}

impl GroupError {
    /// Whether a unique index refused the write.
    pub(crate) fn is_duplicate_key(&self) -> bool {
        match self {
            Self::Write { code, .. } => *code == 11000,
            Self::Command(e) => super::is_duplicate_key(e),
            Self::Gone => false,
        }
    }

    /// As an error with `what` for context; a command failure keeps the
    /// driver's error in the chain, so [`super::is_outage`] still sees it.
    pub(crate) fn into_anyhow(self, what: &str) -> anyhow::Error {
        match self {
            Self::Write { code, message } => {
                anyhow::anyhow!("{what}: the server refused it ({code}): {message}")
            }
            Self::Command(e) => anyhow::Error::new(e).context(what.to_owned()),
            Self::Gone => anyhow::anyhow!("{what}: the store is shutting down"),
        }
    }
}

/// One request's answer.
pub(crate) type Answer = Result<(), GroupError>;

/// A contact as read with its links.
pub(crate) type WithLinks = (Contact, Vec<Link>);

/// The grouping tasks of one store.
#[derive(Clone)]
pub(crate) struct Groups {
    /// Each request: the update statements of one caller, applied in order;
    /// when one is refused, the caller's later ones are skipped.
    pub(crate) link_updates: Batcher<Vec<Document>, Answer>,
    /// Each request: one push to record on its link.
    pub(crate) link_syncs: Batcher<SyncedMark, Answer>,
    pub(crate) link_inserts: Batcher<Document, Answer>,
    pub(crate) log_inserts: Batcher<Document, Answer>,
    pub(crate) contact_inserts: Batcher<Contact, Answer>,
    /// Each request: a claim of a unique key (see `claims.rs`).
    pub(crate) claim_inserts: Batcher<Document, Answer>,
    pub(crate) contact_reads: Batcher<ContactId, Result<Option<WithLinks>, GroupError>>,
    /// Each request: the link with this value of a field, within a scope
    /// (see [`Lookup`]).
    pub(crate) link_lookups: Batcher<Lookup, Result<Option<Document>, GroupError>>,
    /// The same for contacts.
    pub(crate) contact_lookups: Batcher<Lookup, Result<Option<Document>, GroupError>>,
    /// The same for unrecorded creates (by `_id`, one per imported record).
    pub(crate) unrecorded_lookups: Batcher<Lookup, Result<Option<Document>, GroupError>>,
    /// Each request: a contact whose outbox has been relayed, and the first
    /// job of that outbox.
    pub(crate) outbox_clears: Batcher<(ContactId, String), Answer>,
}

impl Groups {
    /// Starts the grouping tasks (on the current runtime).
    pub(crate) fn start(
        db: &Database,
        contacts: &Collection<Contact>,
        links: &Collection<Link>,
        logs: &Collection<SyncLog>,
    ) -> Self {
        let (d, name) = (db.clone(), links.name().to_owned());
        let link_updates = Batcher::spawn(MAX_GROUP, IN_FLIGHT, move |requests| {
            let (d, name) = (d.clone(), name.clone());
            async move { update_in_order(&d, &name, requests).await }
        });
        let (d, name) = (db.clone(), links.name().to_owned());
        let link_syncs = Batcher::spawn(MAX_GROUP, IN_FLIGHT, move |marks| {
            let (d, name) = (d.clone(), name.clone());
            async move { mark_synced_together(&d, &name, marks).await }
        });
        let link_inserts = inserts(links.clone_with_type::<Document>());
        let raw_logs = logs.clone_with_type::<Document>();
        let log_inserts = Batcher::spawn_lingering(MAX_GROUP, IN_FLIGHT, LOG_LINGER, move |docs| {
            let c = raw_logs.clone();
            async move { insert_unordered(&c, docs).await }
        });
        let contact_inserts = inserts(contacts.clone());
        let claim_inserts = inserts(db.collection::<Document>("claims"));
        let (c, l) = (
            contacts.clone_with_type::<Document>(),
            links.clone_with_type::<Document>(),
        );
        let contact_reads = Batcher::spawn(MAX_GROUP, IN_FLIGHT, move |ids| {
            let (c, l) = (c.clone(), l.clone());
            async move { read_with_links(&c, &l, ids).await }
        });
        let link_lookups = lookups(links.clone_with_type::<Document>());
        let contact_lookups = lookups(contacts.clone_with_type::<Document>());
        let unrecorded_lookups = lookups(db.collection::<Document>("unrecorded_creates"));
        let c = contacts.clone_with_type::<Document>();
        let outbox_clears =
            Batcher::spawn_lingering(MAX_GROUP, IN_FLIGHT, CLEAR_LINGER, move |done| {
                let c = c.clone();
                async move {
                    let n = done.len();
                    match clear_outboxes(&c, &done).await {
                        Ok(()) => vec![Ok(()); n],
                        Err(e) => vec![Err(GroupError::Command(e)); n],
                    }
                }
            });
        Self {
            link_updates,
            link_syncs,
            link_inserts,
            log_inserts,
            contact_inserts,
            claim_inserts,
            contact_reads,
            link_lookups,
            contact_lookups,
            unrecorded_lookups,
            outbox_clears,
        }
    }
}

/// Inserts into `c`, grouped (one unordered `insert` a group).
fn inserts<T>(c: Collection<T>) -> Batcher<T, Answer>
where
    T: serde::Serialize + Send + Sync + 'static,
{
    Batcher::spawn(MAX_GROUP, IN_FLIGHT, move |docs| {
        let c = c.clone();
        async move { insert_unordered(&c, docs).await }
    })
}

/// Look-ups in `c`, grouped (one `find` a group, see [`Lookup`]).
fn lookups(c: Collection<Document>) -> Batcher<Lookup, Result<Option<Document>, GroupError>> {
    Batcher::spawn(MAX_GROUP, IN_FLIGHT, move |wanted| {
        let c = c.clone();
        async move { look_up(&c, wanted).await }
    })
}

/// Runs every request's statements as one ordered `update` command. An
/// ordered command stops at the first refused statement: that request is
/// answered with the refusal, its remaining statements are dropped, and the
/// other requests' remaining statements go in the next command.
async fn update_in_order(
    db: &Database,
    collection: &str,
    requests: Vec<Vec<Document>>,
) -> Vec<Answer> {
    let mut answers: Vec<Answer> = vec![Ok(()); requests.len()];
    let mut left: Vec<(usize, Document)> = requests
        .into_iter()
        .enumerate()
        .flat_map(|(i, statements)| statements.into_iter().map(move |s| (i, s)))
        .collect();
    while !left.is_empty() {
        let statements: Vec<&Document> = left.iter().map(|(_, s)| s).collect();
        let reply = db
            .run_command(doc! {
                "update": collection,
                "updates": statements,
                "ordered": true,
            })
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                for (i, _) in &left {
                    if answers[*i].is_ok() {
                        answers[*i] = Err(GroupError::Command(e.clone()));
                    }
                }
                break;
            }
        };
        let refused = reply
            .get_array("writeErrors")
            .ok()
            .and_then(|errors| errors.first())
            .and_then(|e| e.as_document());
        let Some(refused) = refused else { break };
        let at = count(refused.get("index")).min(left.len() - 1);
        let failed = left[at].0;
        answers[failed] = Err(GroupError::Write {
            code: refused.get_i32("code").unwrap_or_default(),
            message: refused.get_str("errmsg").unwrap_or_default().to_owned(),
        });
        left = left.split_off(at + 1);
        left.retain(|(i, _)| *i != failed);
    }
    answers
}

/// Most links one statement of [`mark_synced_together`] updates: each
/// link looks its values up in the statement's list, so the cost per link
/// grows with the list (on secantusd-rs, µs of server CPU per link: 32 →
/// 78–99, 64 → 99–130, against 130–200 for a statement per link).
const MARKS_PER_STATEMENT: usize = 32;

/// Records pushes on their links: one `update` whose statements each
/// update up to [`MARKS_PER_STATEMENT`] links at once. When a link did not
/// match (it does not exist yet, or came twice) or the server refused a
/// statement, the marks go again one statement each, in order (recording
/// a push twice records the same thing), which creates missing links and
/// says which mark was refused.
async fn mark_synced_together(
    db: &Database,
    collection: &str,
    marks: Vec<SyncedMark>,
) -> Vec<Answer> {
    let distinct = marks
        .iter()
        .map(SyncedMark::link_id)
        .collect::<std::collections::HashSet<_>>()
        .len()
        == marks.len();
    if marks.len() > 1 && distinct {
        let statements: Vec<Document> = marks
            .chunks(MARKS_PER_STATEMENT)
            .map(SyncedMark::statement_for_all)
            .collect();
        let reply = db
            .run_command(doc! {
                "update": collection,
                "updates": statements,
                "ordered": false,
            })
            .await;
        match reply {
            Ok(reply)
                if !reply.contains_key("writeErrors") && count(reply.get("n")) == marks.len() =>
            {
                return vec![Ok(()); marks.len()];
            }
            Ok(_) => {}
            Err(e) => return vec![Err(GroupError::Command(e)); marks.len()],
        }
    }
    let one_by_one = marks.iter().map(|m| vec![m.statement()]).collect();
    update_in_order(db, collection, one_by_one).await
}

/// A count or index in a server reply (an int32 or an int64; 0 if absent).
fn count(value: Option<&bson::Bson>) -> usize {
    match value {
        Some(bson::Bson::Int32(n)) => usize::try_from(*n).unwrap_or(0),
        Some(bson::Bson::Int64(n)) => usize::try_from(*n).unwrap_or(0),
        _ => 0,
    }
}

/// Inserts documents in one unordered `insert` (the driver's `insert_many`,
/// which retries like any single write); a refused document fails only its
/// own request.
async fn insert_unordered<T>(collection: &Collection<T>, docs: Vec<T>) -> Vec<Answer>
where
    T: serde::Serialize + Send + Sync,
{
    let n = docs.len();
    match collection.insert_many(docs).ordered(false).await {
        Ok(_) => vec![Ok(()); n],
        Err(e) => match e.kind.as_ref() {
            mongodb::error::ErrorKind::InsertMany(many) if many.write_errors.is_some() => {
                let mut answers: Vec<Answer> = vec![Ok(()); n];
                for w in many.write_errors.iter().flatten() {
                    if let Some(a) = answers.get_mut(w.index) {
                        *a = Err(GroupError::Write {
                            code: w.code,
                            message: w.message.clone(),
                        });
                    }
                }
                answers
            }
            _ => vec![Err(GroupError::Command(e)); n],
        },
    }
}

/// Removes the outboxes of `done` (contact, first job of its outbox) in one
/// `update`, each only if it is still the one relayed (a newer change
/// brings its own). Job ids are unique, so "one of these contacts, whose
/// outbox's first job is one of these jobs" is the same as naming each
/// pair, and the server finds the contacts by `_id` instead of matching
/// every contact against an `$or` of them all.
pub(crate) async fn clear_outboxes(
    contacts: &Collection<Document>,
    done: &[(ContactId, String)],
) -> Result<(), mongodb::error::Error> {
    if done.is_empty() {
        return Ok(());
    }
    let (ids, jobs): (Vec<_>, Vec<_>) = done.iter().map(|(id, job)| (id.oid(), job)).unzip();
    contacts
        .update_many(
            doc! { "_id": { "$in": ids }, "outbox.jobs.0.jobId": { "$in": jobs } },
            doc! { "$unset": { "outbox": "" } },
        )
        .await?;
    Ok(())
}

/// Reads contacts and their links: two `find`s by `_id`, sent together. A
/// link's id is `{contact}:{provider}`, so the links are named, not looked
/// up: on secantusd-rs the two finds cost the server about half what one
/// `aggregate` with a `$lookup` on `contactId` did (45 against 80 µs of CPU
/// per contact, groups of 32).
async fn read_with_links(
    contacts: &Collection<Document>,
    links: &Collection<Document>,
    ids: Vec<ContactId>,
) -> Vec<Result<Option<WithLinks>, GroupError>> {
    use futures::TryStreamExt;
    let oids: Vec<_> = ids.iter().map(|id| id.oid()).collect();
    let link_ids: Vec<String> = ids
        .iter()
        .flat_map(|id| Provider::ALL.map(|p| super::ids::link_id(*id, p)))
        .collect();
    let read_contacts = async {
        contacts
            .find(doc! { "_id": { "$in": &oids } })
            .await?
            .try_collect::<Vec<_>>()
            .await
    };
    let read_links = async {
        links
            .find(doc! { "_id": { "$in": &link_ids } })
            .await?
            .try_collect::<Vec<_>>()
            .await
    };
    let (found, linked) = match tokio::try_join!(read_contacts, read_links) {
        Ok(both) => both,
        Err(e) => return vec![Err(GroupError::Command(e)); ids.len()],
    };
    let mut links_of: std::collections::HashMap<bson::oid::ObjectId, Vec<bson::Bson>> =
        std::collections::HashMap::with_capacity(found.len());
    for link in linked {
        if let Ok(contact) = link.get_object_id("contactId") {
            links_of
                .entry(contact)
                .or_default()
                .push(bson::Bson::Document(link));
        }
    }
    let mut parsed = std::collections::HashMap::with_capacity(found.len());
    for d in found {
        let Ok(id) = d.get_object_id("_id") else {
            continue;
        };
        let links = links_of.remove(&id).map(bson::Bson::Array);
        parsed.insert(id, decode(d, links));
    }
    ids.iter()
        .map(|id| match parsed.get(&id.oid()) {
            None => Ok(None),
            Some(Ok(found)) => Ok(Some(found.clone())),
            Some(Err(message)) => Err(GroupError::Write {
                code: 0,
                message: message.clone(),
            }),
        })
        .collect()
}

/// A document looked up by the value of one field within a scope: the
/// scope's fields must equal (say a customer and a provider), the field must
/// hold the value (say an external id). At most one document matches (a
/// unique index says so).
pub(crate) type Lookup = (Document, &'static str, String);

/// Finds the documents of many lookups in one `find`: the lookups of one
/// scope and field become one `$in` (all of a webhook batch's records are
/// one), the clauses of different scopes an `$or`.
async fn look_up(
    collection: &Collection<Document>,
    wanted: Vec<Lookup>,
) -> Vec<Result<Option<Document>, GroupError>> {
    use futures::TryStreamExt;
    let mut clauses: Vec<(Document, &'static str, Vec<&str>)> = Vec::new();
    for (scope, field, value) in &wanted {
        match clauses
            .iter_mut()
            .find(|(s, f, _)| s == scope && f == field)
        {
            Some((_, _, values)) => values.push(value),
            None => clauses.push((scope.clone(), field, vec![value])),
        }
    }
    let clauses: Vec<Document> = clauses
        .into_iter()
        .map(|(mut scope, field, values)| {
            scope.insert(field, doc! { "$in": values });
            scope
        })
        .collect();
    let filter = match <[Document; 1]>::try_from(clauses) {
        Ok([one]) => one,
        Err(many) => doc! { "$or": many },
    };
    let found: Vec<Document> = match collection.find(filter).await {
        Ok(cursor) => match cursor.try_collect().await {
            Ok(found) => found,
            Err(e) => return vec![Err(GroupError::Command(e)); wanted.len()],
        },
        Err(e) => return vec![Err(GroupError::Command(e)); wanted.len()],
    };
    wanted
        .iter()
        .map(|(scope, field, value)| {
            Ok(found
                .iter()
                .find(|d| {
                    d.get_str(field) == Ok(value.as_str())
                        && scope.iter().all(|(k, v)| d.get(k) == Some(v))
                })
                .cloned())
        })
        .collect()
}

/// A contact document and its looked-up links, decoded.
fn decode(contact: Document, links: Option<bson::Bson>) -> Result<WithLinks, String> {
    let contact: Contact =
        bson::from_document(contact).map_err(|e| format!("decoding a contact: {e}"))?;
    let links = match links {
        Some(bson::Bson::Array(items)) => items
            .into_iter()
            .filter_map(|b| match b {
                bson::Bson::Document(d) => Some(d),
                _ => None,
            })
            .map(|d| bson::from_document::<Link>(d).map_err(|e| format!("decoding a link: {e}")))
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    Ok((contact, links))
}
