//! Tests of one component against its real backing service (the Postgres store, the DynamoDB
//! limiter, the Secrets Manager secret, the operator's `crmsync-admin` command), and of the
//! repository's descriptions of the API (the event files of `events/`, and the contract,
//! `template.yaml` and the local router agreeing), and the local stack staying up.

mod admin;
mod deploy;
mod devstack;
mod events;
mod limiter;
mod secrets;
mod store;
