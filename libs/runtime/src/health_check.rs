//! `<binary> --health-check[=<name>]`: the container health check every image answers itself (no
//! shell or grpcurl in the image). It asks the binary's own configured gRPC address for `name`
//! (default `readiness`) and exits 0 when SERVING, 1 otherwise.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

pub use tonic_health::pb::health_check_response::ServingStatus as Wire;

/// The flag, as docker-compose.yml spells it.
pub const FLAG: &str = "--health-check";
/// The name asked when the flag has no value.
pub const DEFAULT_NAME: &str = "readiness";
/// Longest the whole check may take: compose's health check timeout is 3 s.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Finds `--health-check` or `--health-check=<name>` among `args` (program name first), removes
/// it and returns the name asked for; `None` when the flag is absent.
pub fn take_flag(args: &mut Vec<OsString>) -> Option<String> {
    let at = args.iter().skip(1).position(|arg| {
        arg.to_str().is_some_and(|arg| {
            arg == FLAG
                || arg
                    .strip_prefix(FLAG)
                    .is_some_and(|rest| rest.starts_with('='))
        })
    })? + 1;
    let arg = args.remove(at);
    let arg = arg.to_string_lossy();
    Some(match arg.split_once('=') {
        Some((_, name)) => name.to_owned(),
        None => DEFAULT_NAME.to_owned(),
    })
}

/// Where to reach a server listening on `listen`: a wildcard address is reached on loopback.
pub fn dial_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// The status `service` reports on `channel`.
pub async fn status(
    channel: tonic::transport::Channel,
    service: &str,
) -> Result<Wire, tonic::Status> {
    let response = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?
        .into_inner();
    Ok(Wire::try_from(response.status).unwrap_or(Wire::Unknown))
}

/// Asks `listen` (the binary's own gRPC address) for `service`; the answer as an exit code.
pub async fn check(binary: &str, listen: SocketAddr, service: &str) -> ExitCode {
    let addr = dial_address(listen);
    let asked = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|error| error.to_string())?
            .connect_timeout(TIMEOUT)
            .connect()
            .await
            .map_err(|error| format!("cannot connect: {error}"))?;
        status(channel, service)
            .await
            .map_err(|error| error.message().to_owned())
    };
    match tokio::time::timeout(TIMEOUT, asked).await {
        Ok(Ok(Wire::Serving)) => ExitCode::SUCCESS,
        Ok(Ok(other)) => {
            eprintln!(
                "{binary}: {addr} reports {service:?} {}",
                other.as_str_name()
            );
            ExitCode::FAILURE
        }
        Ok(Err(error)) => {
            eprintln!("{binary}: health check of {addr} failed: {error}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("{binary}: {addr} did not answer within {TIMEOUT:?}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_flag_is_taken_out_with_its_name() {
        let mut given = args(&["bin", "--grpc-addr", "127.0.0.1:1", "--health-check"]);
        assert_eq!(take_flag(&mut given).as_deref(), Some("readiness"));
        assert_eq!(given, args(&["bin", "--grpc-addr", "127.0.0.1:1"]));

        let mut named = args(&["bin", "--health-check=liveness"]);
        assert_eq!(take_flag(&mut named).as_deref(), Some("liveness"));
        assert_eq!(named, args(&["bin"]));

        let mut absent = args(&["bin", "--health-checks", "--health-check-x"]);
        assert_eq!(take_flag(&mut absent), None);
        assert_eq!(absent.len(), 3);
    }

    #[test]
    fn wildcard_listeners_are_dialled_on_loopback() {
        assert_eq!(
            dial_address("0.0.0.0:50051".parse().unwrap()),
            "127.0.0.1:50051".parse().unwrap()
        );
        assert_eq!(
            dial_address("[::]:50051".parse().unwrap()),
            "[::1]:50051".parse().unwrap()
        );
        assert_eq!(
            dial_address("10.0.0.5:1".parse().unwrap()),
            "10.0.0.5:1".parse().unwrap()
        );
    }
}
