//! Black-box tests: the real simulator served on a random port, driven over
//! HTTP.

mod actions;
mod admin;
mod auth;
mod faults;
mod helpers;
mod listing;
