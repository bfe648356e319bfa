//! The policy API as a portal engineer meets it first: grpcurl, reflection and nothing else.

use std::path::Path;
use std::process::Command;

use email2sms_testkit::{ServiceProcess, TestDb, tokens_file};

const BINARY: &str = env!("CARGO_BIN_EXE_email2sms-policy");

/// Runs grpcurl (installed by `scripts/ensure-tools`) and returns its exit status and what it printed.
fn grpcurl(args: &[&str]) -> (bool, String) {
    let output = Command::new("grpcurl")
        .args(args)
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run grpcurl ({error}): run `eval \"$(scripts/ensure-tools)\"` first")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test]
async fn grpcurl_decodes_the_field_violations_of_a_bad_request() {
    let db = TestDb::unique();
    let dir = tempfile::tempdir().unwrap();
    let (tokens, admin, _) = tokens_file(dir.path());
    let mut policy = ServiceProcess::spawn(
        Path::new(BINARY),
        &[
            ("DATABASE_URL", &db.url),
            ("EMAIL2SMS_MIGRATE", "1"),
            ("EMAIL2SMS_API_TOKENS_FILE", tokens.to_str().unwrap()),
            ("EMAIL2SMS_POLICY_GRPC_ADDR", "127.0.0.1:0"),
        ],
    )
    .await;
    let addr = policy.grpc_addr.to_string();
    let authorization = format!("authorization: Bearer {admin}");

    // A request that names no company: INVALID_ARGUMENT with a google.rpc.BadRequest detail.
    let (ok, printed) = grpcurl(&[
        "-plaintext",
        "-H",
        &authorization,
        "-d",
        "{}",
        &addr,
        "email2sms.policy.v1.PolicyService/GetCompany",
    ]);
    assert!(!ok, "{printed}");
    assert!(printed.contains("Code: InvalidArgument"), "{printed}");
    assert!(
        !printed.contains("not recognized"),
        "grpcurl could not decode the error details: {printed}"
    );
    assert!(
        printed.contains("type.googleapis.com/google.rpc.BadRequest"),
        "{printed}"
    );
    // grpcurl prints the detail as JSON, compact or indented depending on its version.
    let compact = printed.replace([' ', '\n'], "");
    assert!(compact.contains(r#""field":"company_id""#), "{printed}");
    assert!(compact.contains(r#""reason":"REQUIRED""#), "{printed}");

    // And the type itself is described, as any reflection client finds it.
    let (ok, printed) = grpcurl(&["-plaintext", &addr, "describe", "google.rpc.BadRequest"]);
    assert!(ok, "{printed}");
    assert!(printed.contains("FieldViolation"), "{printed}");

    policy.terminate();
    policy.wait(std::time::Duration::from_secs(30)).await;
    drop(db);
}

/// The API conventions live in the service comment, so a portal engineer who only has grpcurl
/// still reads how paging, scopes and tenancy work.
#[tokio::test]
async fn grpcurl_describe_shows_the_api_conventions() {
    let db = TestDb::unique();
    let dir = tempfile::tempdir().unwrap();
    let (tokens, _, _) = tokens_file(dir.path());
    let mut policy = ServiceProcess::spawn(
        Path::new(BINARY),
        &[
            ("DATABASE_URL", &db.url),
            ("EMAIL2SMS_MIGRATE", "1"),
            ("EMAIL2SMS_API_TOKENS_FILE", tokens.to_str().unwrap()),
            ("EMAIL2SMS_POLICY_GRPC_ADDR", "127.0.0.1:0"),
        ],
    )
    .await;
    let addr = policy.grpc_addr.to_string();

    let (ok, printed) = grpcurl(&[
        "-plaintext",
        &addr,
        "describe",
        "email2sms.policy.v1.PolicyService",
    ]);
    assert!(ok, "{printed}");
    // grpcurl prints the comment with its `//` markers and the proto's line breaks; compare
    // the words only.
    let words = printed
        .lines()
        .map(|line| line.trim().trim_start_matches("//").trim())
        .collect::<Vec<_>>()
        .join(" ");
    for convention in [
        // Scope.
        "needs a bearer token with scope `admin`",
        // Tenancy.
        "every request names `company_id`",
        // Paging.
        "`page_size` (0 = default 50, capped at 1000)",
        "an empty `next_page_token` means the last page",
        "valid only for the company and the same filters it was issued for",
        "start again without a page_token",
        // Errors, idempotency and updates.
        "`google.rpc.BadRequest`",
        "client-chosen `request_id`",
        "`google.protobuf.FieldMask update_mask`",
    ] {
        assert!(
            words.contains(convention),
            "describe does not show {convention:?}:\n{printed}"
        );
    }
    // The RPCs are listed after the comment, as usual.
    assert!(words.contains("rpc ListEmailAddresses"), "{printed}");

    policy.terminate();
    policy.wait(std::time::Duration::from_secs(30)).await;
    drop(db);
}
