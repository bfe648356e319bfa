//! End-to-end tests: the real binaries started together, talking to real PostgreSQL, Redis and
//! RabbitMQ, a real DNS server (NSD), an SMSC outside the process (the npm `smpp` package) and a
//! real mail client (Python's smtplib). The tests are in `tests/`; this library is what they share.
//!
//! - [`cluster`]: the four services as processes with a database, Redis prefix and AMQP prefix of
//!   their own, and the portal's calls over gRPC.
//! - [`smsc`]: the SMSC every SMS goes to, which counts what it received.
//! - [`mail`]: mail sent by Python's smtplib, each message's SMTP reply kept.
//! - [`status`]: a subscriber of the `sms.status` queue.
//! - [`proxy`], [`private_redis`]: the faults a drill injects (a broker cut, Redis stopped).
//! - [`sink`]: the SMTP server notification mail goes to.
#![forbid(unsafe_code)]

pub mod cluster;
pub mod mail;
pub mod private_redis;
pub mod proxy;
pub mod sink;
pub mod smsc;
pub mod status;

use std::path::PathBuf;

/// The workspace root (this crate is `tests/` in it).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_owned()
}

/// The Python of `scripts/ensure-tools`' virtualenv (which has aiosmtpd), else the system's.
pub fn python() -> PathBuf {
    let venv = workspace_root().join("target/tools/py/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}
