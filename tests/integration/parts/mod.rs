//! Tests of one component against its real backing service (the Postgres store, also over TLS and
//! through PgBouncer; the DynamoDB limiter; the Secrets Manager secret), and of the repository's
//! descriptions of the API (the event files of `events/`, and the contract, `template.yaml` and the
//! local router agreeing).

mod deploy;
mod events;
mod limiter;
mod pooler;
mod secrets;
mod store;
mod tls;
