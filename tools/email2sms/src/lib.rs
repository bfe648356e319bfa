//! The operator's command: run migrations, start the whole cluster locally, administer policies.
#![forbid(unsafe_code)]
