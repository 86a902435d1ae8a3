//! The sync rules: what a job does with the app's store and the CRMs.
//! Handlers return [`workers::JobError`]s: store failures are transient (the
//! database may come back), CRM failures are classified by the client.

pub mod merge;
pub mod outbound;
pub mod universal;

pub use outbound::{link_lease_name, with_lease, Outbound, OutboundUpsert, OUTBOUND_QUEUE};
