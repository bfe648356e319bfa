//! `email2sms-ingest`: configuration → telemetry → serve; the work is in the library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    email2sms_runtime::service::main(email2sms_ingest::BINARY, email2sms_ingest::start)
}
