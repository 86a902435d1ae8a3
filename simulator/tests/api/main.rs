//! Black-box tests: the real simulator served on a random port, driven over
//! HTTP.

mod accounts;
mod actions;
mod admin;
mod auth;
mod batch;
mod delivery;
mod faults;
mod flow_events;
mod helpers;
mod listing;
mod receiver;
mod webhooks;
