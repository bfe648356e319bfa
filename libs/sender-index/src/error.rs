//! The one error of the sender index.

/// Why the index could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Redis did not answer, or refused the command.
    #[error("redis: {0}")]
    Redis(#[source] redis::RedisError),
    /// A value is not a protobuf `CompiledSender`: the index is damaged, ask Postgres instead.
    #[error("the value of {key} is not a compiled sender: {source}")]
    Undecodable {
        key: String,
        #[source]
        source: prost::DecodeError,
    },
    /// A domain key holds the entry of another domain: the exact-domain rule forbids using it.
    #[error("{key} holds the entry of {matched:?}, which does not cover {domain} exactly")]
    WrongDomain {
        key: String,
        matched: String,
        domain: String,
    },
    /// A field of the IP table is not a network.
    #[error("the IP table holds the field {field:?}, which is not a network: {source}")]
    BadNetwork {
        field: String,
        #[source]
        source: email2sms_domain::IpNetworkError,
    },
}

impl From<redis::RedisError> for Error {
    fn from(error: redis::RedisError) -> Error {
        Error::Redis(error)
    }
}

impl Error {
    /// True when Redis itself failed (as opposed to holding damaged data).
    pub fn is_redis(&self) -> bool {
        matches!(self, Error::Redis(_))
    }
}

/// The result of an index operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
