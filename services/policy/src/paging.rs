//! Keyset pagination of the List RPCs, with the page tokens of `email2sms_runtime::page_token`.
//!
//! A token carries the sort key and id of the last row returned; its HMAC tag binds the company it
//! was issued to and the filters it was issued for, so a token altered, presented by another
//! company, with other filters, or minted by another deployment is INVALID_ARGUMENT ("start again
//! without a page_token"). Keyset rather than OFFSET, so a page costs the same at row 100,000 as
//! at row 0 and rows inserted meanwhile do not shift later pages.

use email2sms_runtime::page_token::{DESCRIPTION, KeyError, Keyset, PageTokenKey, REASON};
use uuid::Uuid;

use crate::PolicyApi;
use crate::error::{Error, Result};

/// The position after which the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageKey {
    /// The sort value of the last row (name, address, network, line number or time).
    pub key: String,
    /// The id of the last row: the tie breaker that makes the order total.
    pub id: Uuid,
}

/// The INVALID_ARGUMENT of a page token that is not one this list issued (also for a verified
/// token whose sort key this list cannot read, which only a bug would produce).
pub fn invalid() -> Error {
    Error::invalid("page_token", REASON, DESCRIPTION)
}

impl From<KeyError> for Error {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Database(e) => Error::from(e),
            KeyError::TooShort(_) => Error::Internal(error.to_string()),
        }
    }
}

/// Issues and reads the page tokens of one company's lists.
#[derive(Debug, Clone, Copy)]
pub struct Pager<'a> {
    key: &'a PageTokenKey,
    /// The company's internal id.
    scope: Uuid,
}

impl PolicyApi {
    /// The pager of `company` (its internal id); reads the service's key on first use.
    pub(crate) async fn pager(&self, company: Uuid) -> Result<Pager<'_>> {
        Ok(Pager::new(
            self.page_token_key.get(&self.pool).await?,
            company,
        ))
    }
}

impl<'a> Pager<'a> {
    pub fn new(key: &'a PageTokenKey, company: Uuid) -> Self {
        Self {
            key,
            scope: company,
        }
    }

    /// Decodes `token` (empty = first page) issued for `filters`.
    pub fn decode(&self, token: &str, filters: &str) -> Result<Option<PageKey>> {
        let Some(position) = self
            .key
            .open(self.scope, filters.as_bytes(), token)
            .map_err(|_| invalid())?
        else {
            return Ok(None);
        };
        let key = String::from_utf8(position.sort).map_err(|_| invalid())?;
        Ok(Some(PageKey {
            key,
            id: position.id,
        }))
    }

    /// The token for the page after the row with sort value `key` and id `id`.
    pub fn encode(&self, key: String, id: Uuid, filters: &str) -> String {
        let position = Keyset {
            id,
            sort: key.into_bytes(),
        };
        self.key.seal(self.scope, filters.as_bytes(), &position)
    }

    /// Trims a page fetched with `limit + 1` rows to `limit` and returns the next token.
    pub fn finish<T>(
        &self,
        mut rows: Vec<T>,
        limit: i64,
        filters: &str,
        key_of: impl Fn(&T) -> (String, Uuid),
    ) -> (Vec<T>, String) {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        if rows.len() > limit {
            rows.truncate(limit);
            let (key, id) = rows.last().map(&key_of).unwrap_or_default();
            (rows, self.encode(key, id, filters))
        } else {
            (rows, String::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> PageTokenKey {
        PageTokenKey::from_bytes(&[byte; 32]).unwrap()
    }

    fn refused(result: Result<Option<PageKey>>) -> bool {
        matches!(result, Err(Error::InvalidArgument(v))
            if v[0].field == "page_token" && v[0].description.contains("start again without a page_token"))
    }

    #[test]
    fn token_round_trips_for_the_same_company_and_filters_only() {
        let (key, other_key) = (key(1), key(2));
        let (company, other_company) = (Uuid::new_v4(), Uuid::new_v4());
        let pager = Pager::new(&key, company);
        let id = Uuid::new_v4();
        let token = pager.encode("a@example.com".into(), id, "policy=1");
        let page = pager.decode(&token, "policy=1").unwrap().unwrap();
        assert_eq!((page.key.as_str(), page.id), ("a@example.com", id));
        assert!(!token.contains("example"), "{token}");
        assert!(refused(pager.decode(&token, "policy=2")));
        assert!(refused(
            Pager::new(&key, other_company).decode(&token, "policy=1")
        ));
        assert!(refused(
            Pager::new(&other_key, company).decode(&token, "policy=1")
        ));
        assert!(refused(pager.decode("zz", "policy=1")));
        assert_eq!(pager.decode("", "policy=1").unwrap(), None);
    }

    #[test]
    fn finish_returns_a_token_only_when_there_is_more() {
        let key = key(1);
        let pager = Pager::new(&key, Uuid::nil());
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        let (page, token) = pager.finish(ids.clone(), 2, "f", |id| (id.to_string(), *id));
        assert_eq!(page, ids[..2]);
        assert_eq!(pager.decode(&token, "f").unwrap().unwrap().id, ids[1]);
        let (page, token) = pager.finish(ids.clone(), 3, "f", |id| (id.to_string(), *id));
        assert_eq!((page.len(), token.as_str()), (3, ""));
    }
}
