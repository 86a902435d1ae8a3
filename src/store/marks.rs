//! One successful push to record on its link, as the grouped update
//! takes it (many links' marks go to MongoDB as one statement).

use bson::{doc, DateTime};

use super::ids::link_id;
use crate::domain::{ContactId, CustomerId, Provider};

/// One successful push to record (see [`Store::mark_synced`]), as the
/// grouped update takes it.
#[derive(Debug, Clone)]
pub(crate) struct SyncedMark {
    pub(crate) contact: ContactId,
    pub(crate) customer: CustomerId,
    pub(crate) provider: Provider,
    pub(crate) external_id: String,
    pub(crate) version: i64,
    pub(crate) job_id: String,
    /// The synced fields' snapshot, or null.
    pub(crate) fields: bson::Bson,
    pub(crate) pushed_ms: Option<i64>,
    pub(crate) at: DateTime,
}

/// Where the values of one link's mark sit while a statement for many
/// links runs (removed by the statement's last stage).
const MARK: &str = "__mark";

impl SyncedMark {
    /// The link's id.
    pub(crate) fn link_id(&self) -> String {
        link_id(self.contact, self.provider)
    }

    /// The mark as one statement of its own (an update pipeline, an
    /// upsert): recorded, and turned `synced` unless a newer change is
    /// waiting. Values from outside go in as `$literal`, so a `$` in them
    /// is never read as a field path.
    pub(crate) fn statement(&self) -> bson::Document {
        let version = self.version;
        let fresh = doc! { "$lte": [{ "$ifNull": ["$pendingVersion", version] }, version] };
        let mut set = doc! {
            "externalId": { "$literal": &self.external_id },
            "lastSyncedAt": self.at,
            "updatedAt": self.at,
            "lastJobId": { "$literal": &self.job_id },
            "syncedFields": { "$literal": self.fields.clone() },
            "contactId": { "$ifNull": ["$contactId", self.contact.oid()] },
            "customerId": { "$ifNull": ["$customerId", { "$literal": self.customer.as_str() }] },
            "provider": { "$ifNull": ["$provider", self.provider.as_str()] },
            "pendingVersion": { "$ifNull": ["$pendingVersion", version] },
            "syncedVersion": { "$max": ["$syncedVersion", version] },
        };
        if let Some(ms) = self.pushed_ms {
            set.insert("lastPushedAt", DateTime::from_millis(ms));
        }
        doc! {
            "q": { "_id": self.link_id() },
            "u": [
                { "$set": set },
                { "$set": settle(&fresh) },
                { "$unset": "pushIntent" },
            ],
            "upsert": true,
        }
    }

    /// Many marks, of distinct links that exist, as one statement that
    /// updates them all: each link finds its own values by its id. The
    /// same effect as each mark's [`Self::statement`] (but creates no
    /// link). A server spends most of an update's cost per statement
    /// (planning it, matching it), so this one costs far less than the
    /// marks' statements one by one.
    pub(crate) fn statement_for_all(marks: &[Self]) -> bson::Document {
        let ids: Vec<String> = marks.iter().map(Self::link_id).collect();
        let values: Vec<bson::Document> = marks
            .iter()
            .map(|m| {
                let mut v = doc! {
                    "externalId": &m.external_id,
                    "jobId": &m.job_id,
                    "fields": m.fields.clone(),
                    "version": m.version,
                    "contactId": m.contact.oid(),
                    "customerId": m.customer.as_str(),
                    "provider": m.provider.as_str(),
                    "at": m.at,
                };
                if let Some(ms) = m.pushed_ms {
                    v.insert("pushedAt", DateTime::from_millis(ms));
                }
                v
            })
            .collect();
        let field = |name: &str| format!("${MARK}.{name}");
        let version = field("version");
        let fresh = doc! { "$lte": ["$pendingVersion", &version] };
        doc! {
            "q": { "_id": { "$in": &ids } },
            "u": [
                { "$set": { MARK: { "$arrayElemAt": [
                    { "$literal": values },
                    { "$indexOfArray": [{ "$literal": &ids }, "$_id"] },
                ] } } },
                { "$set": {
                    "externalId": field("externalId"),
                    "lastSyncedAt": field("at"),
                    "updatedAt": field("at"),
                    "lastJobId": field("jobId"),
                    "syncedFields": field("fields"),
                    "contactId": { "$ifNull": ["$contactId", field("contactId")] },
                    "customerId": { "$ifNull": ["$customerId", field("customerId")] },
                    "provider": { "$ifNull": ["$provider", field("provider")] },
                    "pendingVersion": { "$ifNull": ["$pendingVersion", &version] },
                    "syncedVersion": { "$max": ["$syncedVersion", &version] },
                    "lastPushedAt": { "$ifNull": [field("pushedAt"), "$lastPushedAt"] },
                } },
                { "$set": settle(&fresh) },
                { "$unset": ["pushIntent", MARK] },
            ],
            "multi": true,
        }
    }
}

/// The stage that turns a link `synced` when `fresh` (no newer change is
/// waiting), and leaves its status as it is otherwise.
fn settle(fresh: &bson::Document) -> bson::Document {
    doc! {
        "syncStatus": { "$cond": [fresh, "synced", { "$ifNull": ["$syncStatus", "pending"] }] },
        "lastError": { "$cond": [fresh, bson::Bson::Null, "$lastError"] },
        "attempts": { "$cond": [fresh, 0_i64, { "$ifNull": ["$attempts", 0_i64] }] },
    }
}
