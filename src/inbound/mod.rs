//! Inbound sync: changes made in a CRM reach the app's MongoDB. HubSpot
//! webhooks and Integration.app flow events only say *that* a record
//! changed; the `inbound-change` job fetches the record and applies it. The
//! Pipedrive poll lists changed records page by page and applies each.
//!
//! Convergence rules, in [`apply`]: CRM `updatedTime` orders changes (older
//! ones are ignored), a record whose values equal the contact's is an echo of
//! our own push and changes nothing, an applied change is pushed to the
//! *other* CRMs only, and when both sides changed the conflict policy
//! decides.

pub mod apply;
pub mod events;
pub mod jobs;
pub mod poll;
pub mod record;
pub mod signature;
pub mod webhook;

pub use apply::{ConflictPolicy, InboundSync};
pub use jobs::{InboundChange, ProviderPoll, INBOUND_QUEUE, POLL_QUEUE};
