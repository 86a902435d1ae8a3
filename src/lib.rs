//! contact-sync: keeps contacts in sync both ways between the app's MongoDB
//! and the CRMs its customers use, through Integration.app.

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
