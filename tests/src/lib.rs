//! End-to-end tests: the real binaries started together, talking to real PostgreSQL, Redis and
//! RabbitMQ. The tests are in `tests/`; this library is empty.
#![forbid(unsafe_code)]
