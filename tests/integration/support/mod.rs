//! The harness the tests share: a whole crmsync environment per test (`env`), Postgres and moto
//! (`common`), the captured log (`capture`), the rows a correct pull stores and the contract's error
//! shape (`rows`), leads and their delivery (`leads`), and the dashboard's calls of the `integrations`
//! and `sync-logs` functions (`api`), a receiver of CRM webhook deliveries (`hooks`), and the sync queue in moto with the
//! poller that feeds it to `sync-worker` as Lambda's event source does (`queue`).

pub mod api;
pub mod capture;
pub mod common;
pub mod env;
pub mod hooks;
pub mod leads;
pub mod queue;
pub mod rows;
