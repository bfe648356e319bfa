//! The `email2sms.verification.v1.VerificationService` RPCs over [`Verifier`].

use std::time::Duration;

use chrono::Utc;
use email2sms_proto::tonic::{Request, Response, Status};
use email2sms_proto::verification::v1 as pb;
use email2sms_proto::verification::v1::verification_service_server::VerificationService;

use crate::engine::{ChallengeKey, Verifier};

/// Time kept back from the caller's deadline for recording the check and answering.
const ANSWER_MARGIN: Duration = Duration::from_millis(200);

/// The challenge API.
#[derive(Debug, Clone)]
pub struct VerificationApi {
    verifier: Verifier,
}

impl VerificationApi {
    pub fn new(verifier: Verifier) -> VerificationApi {
        VerificationApi { verifier }
    }
}

#[email2sms_proto::tonic::async_trait]
impl VerificationService for VerificationApi {
    async fn create_challenge(
        &self,
        request: Request<pb::CreateChallengeRequest>,
    ) -> Result<Response<pb::CreateChallengeResponse>, Status> {
        let request = request.into_inner();
        let key = ChallengeKey::parse(&request.company_id, &request.domain_name)?;
        let (challenge, created) = self.verifier.create(&key, Utc::now()).await?;
        Ok(Response::new(pb::CreateChallengeResponse {
            challenge: Some(self.verifier.to_proto(&challenge)),
            created,
        }))
    }

    async fn rotate_challenge(
        &self,
        request: Request<pb::RotateChallengeRequest>,
    ) -> Result<Response<pb::RotateChallengeResponse>, Status> {
        let request = request.into_inner();
        let key = ChallengeKey::parse(&request.company_id, &request.domain_name)?;
        let challenge = self.verifier.rotate(&key, Utc::now()).await?;
        Ok(Response::new(pb::RotateChallengeResponse {
            challenge: Some(self.verifier.to_proto(&challenge)),
        }))
    }

    async fn check_now(
        &self,
        request: Request<pb::CheckNowRequest>,
    ) -> Result<Response<pb::CheckNowResponse>, Status> {
        let limit = client_deadline(&request).map(|d| d.saturating_sub(ANSWER_MARGIN));
        let request = request.into_inner();
        let key = ChallengeKey::parse(&request.company_id, &request.domain_name)?;
        let applied = self.verifier.check_now(&key, limit, None).await?;
        Ok(Response::new(pb::CheckNowResponse {
            challenge: Some(self.verifier.to_proto(&applied.challenge)),
            check: Some(applied.check.to_proto()),
        }))
    }

    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        let request = request.into_inner();
        let key = ChallengeKey::parse(&request.company_id, &request.domain_name)?;
        let (challenge, checks) = self
            .verifier
            .status(&key, request.check_history_limit)
            .await?;
        Ok(Response::new(pb::GetStatusResponse {
            challenge: Some(self.verifier.to_proto(&challenge)),
            recent_checks: checks.iter().map(|c| c.to_proto()).collect(),
        }))
    }

    async fn delete_challenge(
        &self,
        request: Request<pb::DeleteChallengeRequest>,
    ) -> Result<Response<pb::DeleteChallengeResponse>, Status> {
        let request = request.into_inner();
        let key = ChallengeKey::parse(&request.company_id, &request.domain_name)?;
        self.verifier.delete(&key).await?;
        Ok(Response::new(pb::DeleteChallengeResponse {}))
    }
}

/// The caller's deadline from the `grpc-timeout` header (`<digits><unit>`, unit one of
/// H M S m u n), as the gRPC over HTTP/2 specification defines it.
fn client_deadline<T>(request: &Request<T>) -> Option<Duration> {
    let text = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_header_is_read_in_every_unit() {
        let with = |value: &str| {
            let mut request = Request::new(());
            request
                .metadata_mut()
                .insert("grpc-timeout", value.parse().unwrap());
            client_deadline(&request)
        };
        assert_eq!(with("5S"), Some(Duration::from_secs(5)));
        assert_eq!(with("250m"), Some(Duration::from_millis(250)));
        assert_eq!(with("2M"), Some(Duration::from_secs(120)));
        assert_eq!(with("soon"), None);
        assert_eq!(client_deadline(&Request::new(())), None);
    }
}
