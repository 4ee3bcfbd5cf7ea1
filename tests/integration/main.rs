//! Black-box tests of crmsync against a real Postgres cluster and moto (one of each per test run,
//! started by `crmsync-testkit`). One test binary for all of them keeps link time down.

mod common;
mod deploy;
mod env;
mod events;
mod integrations;
mod limiter;
mod pull;
mod push;
mod schedule;
mod secrets;
mod store;
