//! Tests of one component against its real backing service (the Postgres store, also over TLS and
//! through PgBouncer; the DynamoDB limiter; the Secrets Manager secret; the operator's `crmsync-admin`
//! command), of the repository's descriptions of the API (the event files of `events/`, and the
//! contract, `openapi.yaml`, `template.yaml` and the local router agreeing), and of the local stack
//! staying up.

mod admin;
mod deploy;
mod devstack;
mod events;
mod limiter;
mod live;
mod openapi;
mod pooler;
mod secrets;
mod store;
mod tls;
