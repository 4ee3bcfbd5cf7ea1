//! The reliability and security suites, across routes: every CRM fault, Postgres and DynamoDB outages
//! (`faults`), concurrent Lambda instances (`races`), sync processes killed mid-way (`crash`), forged
//! credentials, Row Level Security through every route and secrets searched for everywhere
//! (`security`), hostile input on every route (`hostile`), and the metric lines a sync prints (`metrics`). Figures go to the reliability report.

mod crash;
mod faults;
mod hostile;
mod metrics;
mod races;
mod security;
