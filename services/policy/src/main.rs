//! `email2sms-policy`: configuration → telemetry → serve; the work is in the library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    email2sms_runtime::service::main(email2sms_policy::BINARY, email2sms_policy::start)
}
