//! contact-sync: keeps contacts in sync both ways between the app's MongoDB
//! and the CRMs its customers use, through Integration.app.
//!
//! ## Layout
//! Dependencies point up this list, never down.
//! - `domain` — parsed types ([`domain::ContactId`], [`domain::Email`],
//!   [`domain::Provider`], …) and the universal contact shape.
//! - `store` — MongoDB: contacts and their outbox, links, sync logs, poll
//!   cursors (with each connection's first sync), claims of unique keys.
//! - `crm` — the Integration.app client: a token per customer, the actions
//!   (single and batch), the pool-wide rate budget per connection; it reads
//!   a customer's connection from `store`.
//! - `sync` — the sync rules both ways: push and merge, inbound apply,
//!   polls and full scans, a first sync's write step.
//! - `jobs` — the job kinds, one file each, their registry, the enqueuer
//!   and the outbox relay.
//! - `api` — the poem api, the console, `/metrics`, the CRM-facing hooks.
//! - `app`, `cli`, `scheduler`, `check`, `ops_cli`, `config` — the
//!   processes, their settings and the operator commands.
//!
//! Beneath `crm`, `sync`, `jobs` and `api` sits the `workers` crate, the
//! durable job runtime on Redis; it knows nothing of this one.

pub mod api;
pub mod app;
pub mod check;
pub mod cli;
pub mod config;
pub mod crm;
pub mod domain;
pub mod jobs;
pub mod ops_cli;
pub mod scheduler;
pub mod store;
pub mod sync;
