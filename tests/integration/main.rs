//! Black-box tests of crmsync against a real Postgres cluster and moto (one of each per test run,
//! started by `crmsync-testkit`). One test binary for all of them keeps link time down.

mod capture;
mod common;
mod crash;
mod deploy;
mod env;
mod events;
mod faults;
mod hostile;
mod integrations;
mod limiter;
mod pull;
mod push;
mod races;
mod rows;
mod schedule;
mod secrets;
mod security;
mod store;
