//! Black-box tests of crmsync against a real Postgres cluster and moto (one of each per test run,
//! started by `crmsync-testkit`) and the CRM sandbox. One test binary for all of them keeps link time
//! down. The tests are filed by what they test:
//!
//! - `routes/`: one file per function of the contract's routes table, the behaviour of that route;
//! - `qualities/`: the reliability and security suites (faults, races, crashes, security, hostile
//!   input), across routes;
//! - `parts/`: one component (the store, the limiter, the secret) or the repository's descriptions of
//!   the API (the event files, the deploy descriptions);
//! - `support/`: the harness they share.

mod parts;
mod qualities;
mod routes;
mod support;
