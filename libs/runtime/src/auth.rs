//! Bearer-token authentication by scope, checked by one interceptor in front of every API service.
//!
//! Health and reflection are registered without it, so probes and `grpcurl list` work without a
//! token while every RPC that reads or changes data needs one.

use std::path::Path;
use std::sync::Arc;

use tonic::{Request, Status};

use crate::config::{ConfigError, ServerArgs};

/// What a token may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The portal backend and operators' tools: every admin RPC.
    Admin,
    /// Services inside the cluster calling each other (sender resolution, challenges).
    Internal,
}

impl Scope {
    fn parse(text: &str) -> Option<Scope> {
        match text {
            "admin" => Some(Scope::Admin),
            "internal" => Some(Scope::Internal),
            _ => None,
        }
    }
}

/// Tokens shorter than this are refused at start: a guessable token is no authentication.
pub const MIN_TOKEN_LEN: usize = 24;

/// Each configured token with the scope it grants.
type TokenTable = Vec<(Scope, Vec<u8>)>;

/// The configured tokens, or none at all when the operator explicitly chose an insecure cluster.
#[derive(Clone)]
pub struct Auth {
    tokens: Option<Arc<TokenTable>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the tokens themselves.
        match &self.tokens {
            Some(tokens) => write!(f, "Auth({} tokens)", tokens.len()),
            None => f.write_str("Auth(disabled)"),
        }
    }
}

impl Auth {
    /// Loads the tokens file, or accepts running without one only when asked to, loudly.
    pub fn from_args(args: &ServerArgs) -> Result<Auth, ConfigError> {
        match (&args.api_tokens_file, args.insecure_no_auth) {
            (Some(path), _) => Auth::from_file(path),
            (None, true) => {
                tracing::warn!(
                    "EMAIL2SMS_INSECURE_NO_AUTH is set: every RPC is open to anyone who can reach this port; never do this outside a development machine"
                );
                Ok(Auth { tokens: None })
            }
            (None, false) => Err(ConfigError::NoAuthConfigured),
        }
    }

    pub fn from_file(path: &Path) -> Result<Auth, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::TokensFileUnreadable {
                path: path.to_owned(),
                source,
            })?;
        Auth::from_lines(path, &text)
    }

    fn from_lines(path: &Path, text: &str) -> Result<Auth, ConfigError> {
        let invalid = |line: usize, reason: String| ConfigError::TokensFileInvalid {
            path: path.to_owned(),
            line,
            reason,
        };
        let mut tokens: TokenTable = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let mut fields = content.split_whitespace();
            let (Some(scope), Some(token), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(invalid(
                    line,
                    "expected exactly two fields: SCOPE TOKEN".into(),
                ));
            };
            let scope = Scope::parse(scope).ok_or_else(|| {
                invalid(
                    line,
                    format!("unknown scope {scope:?}; use admin or internal"),
                )
            })?;
            if token.len() < MIN_TOKEN_LEN {
                return Err(invalid(
                    line,
                    format!(
                        "the token is shorter than {MIN_TOKEN_LEN} characters; generate one with `openssl rand -hex 32`"
                    ),
                ));
            }
            if tokens.iter().any(|(_, t)| t == token.as_bytes()) {
                return Err(invalid(line, "this token appears twice".into()));
            }
            tokens.push((scope, token.as_bytes().to_vec()));
        }
        if tokens.is_empty() {
            return Err(invalid(0, "the file holds no tokens".into()));
        }
        Ok(Auth {
            tokens: Some(Arc::new(tokens)),
        })
    }

    /// An interceptor that lets through only requests bearing a token of one of `allowed` scopes.
    pub fn require(&self, allowed: &'static [Scope]) -> RequireScope {
        RequireScope {
            auth: self.clone(),
            allowed,
        }
    }

    fn scope_of(&self, presented: &[u8]) -> Option<Option<Scope>> {
        let tokens = self.tokens.as_ref()?;
        // Compare against every token without stopping early, so timing says nothing about which
        // bytes matched.
        let mut found = None;
        for (scope, token) in tokens.iter() {
            if constant_time_eq(token, presented) {
                found = Some(*scope);
            }
        }
        Some(found)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The interceptor [`Auth::require`] returns.
#[derive(Debug, Clone)]
pub struct RequireScope {
    auth: Auth,
    allowed: &'static [Scope],
}

impl tonic::service::Interceptor for RequireScope {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        match self.auth.scope_of(presented.unwrap_or("").as_bytes()) {
            // Authentication disabled by the operator.
            None => Ok(request),
            Some(_) if presented.is_none() => Err(Status::unauthenticated(
                "missing credentials: send the header `authorization: Bearer <token>`",
            )),
            Some(None) => Err(Status::unauthenticated(
                "the bearer token is not one this server knows",
            )),
            Some(Some(scope)) if self.allowed.contains(&scope) => Ok(request),
            Some(Some(scope)) => Err(Status::permission_denied(format!(
                "a token of scope {scope:?} may not call this service; it needs one of {:?}",
                self.allowed
            ))),
        }
    }
}

/// Adds `authorization: Bearer <token>` to every outgoing request of a client inside the cluster.
#[derive(Debug, Clone)]
pub struct BearerToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl BearerToken {
    pub fn new(token: Option<&str>) -> Result<BearerToken, ConfigError> {
        token
            .map(|t| {
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| ConfigError::Invalid {
                        name: "EMAIL2SMS_API_TOKEN",
                        reason: "the token must be printable ASCII".into(),
                    })
            })
            .transpose()
            .map(BearerToken)
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    const ADMIN: &str = "admin-token-0123456789abcdef";
    const INTERNAL: &str = "internal-token-0123456789abcdef";

    fn auth() -> Auth {
        Auth::from_lines(
            Path::new("tokens"),
            &format!("# portal\nadmin {ADMIN}\n\ninternal {INTERNAL} # ingest\n"),
        )
        .unwrap()
    }

    fn call(auth: &Auth, allowed: &'static [Scope], header: Option<&str>) -> Result<(), Status> {
        let mut request = Request::new(());
        if let Some(header) = header {
            request
                .metadata_mut()
                .insert("authorization", header.parse().unwrap());
        }
        auth.require(allowed).call(request).map(|_| ())
    }

    #[test]
    fn tokens_are_checked_by_scope() {
        let auth = auth();
        assert!(call(&auth, &[Scope::Admin], Some(&format!("Bearer {ADMIN}"))).is_ok());
        let denied = call(&auth, &[Scope::Admin], Some(&format!("Bearer {INTERNAL}"))).unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        let missing = call(&auth, &[Scope::Admin], None).unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
        let wrong = call(
            &auth,
            &[Scope::Admin],
            Some("Bearer admin-token-0123456789abcdeX"),
        )
        .unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn disabled_auth_lets_everything_through() {
        let auth = Auth { tokens: None };
        assert!(call(&auth, &[Scope::Internal], None).is_ok());
    }

    #[test]
    fn bad_token_files_are_refused_with_the_line() {
        let short = Auth::from_lines(Path::new("t"), "admin short\n").unwrap_err();
        assert!(short.to_string().contains("line 1"), "{short}");
        let scope = Auth::from_lines(Path::new("t"), &format!("\nroot {ADMIN}\n")).unwrap_err();
        assert!(
            scope.to_string().contains("line 2") && scope.to_string().contains("root"),
            "{scope}"
        );
        assert!(Auth::from_lines(Path::new("t"), "# nothing\n").is_err());
        assert!(
            Auth::from_lines(
                Path::new("t"),
                &format!("admin {ADMIN}\ninternal {ADMIN}\n")
            )
            .is_err()
        );
    }
}
