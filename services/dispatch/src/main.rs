//! `email2sms-dispatch`: configuration → telemetry → serve; the work is in the library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    email2sms_runtime::service::main(email2sms_dispatch::BINARY, email2sms_dispatch::start)
}
