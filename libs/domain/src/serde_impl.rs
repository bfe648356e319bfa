//! Serde support: every type travels as its canonical string and is validated on the way in, so
//! a deserialised value is as trustworthy as a parsed one.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::{DomainName, EmailAddress, IpNetwork, PhoneNumber, Region, VerificationToken};

struct ParseVisitor<T>(PhantomData<T>, &'static str);

impl<T> Visitor<'_> for ParseVisitor<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.1)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
}

macro_rules! string_serde {
    ($ty:ty, $what:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_str(ParseVisitor(PhantomData, $what))
            }
        }
    };
}

string_serde!(DomainName, "a domain name such as example.com");
string_serde!(EmailAddress, "an email address such as name@example.com");
string_serde!(
    IpNetwork,
    "an IP address or CIDR network such as 192.0.2.0/24"
);
// Without a region, so only the international form deserialises; E.164 always does.
string_serde!(PhoneNumber, "an E.164 phone number such as +64211234567");
string_serde!(Region, "a two-letter region code such as NZ");
string_serde!(VerificationToken, "a 32-character hex verification token");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_as_canonical_strings() {
        let e: EmailAddress = serde_json::from_str("\"Bob@Example.COM\"").unwrap();
        assert_eq!(serde_json::to_string(&e).unwrap(), "\"bob@example.com\"");
        let n: IpNetwork = serde_json::from_str("\"::ffff:1.2.3.4\"").unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"1.2.3.4\"");
        let p: PhoneNumber = serde_json::from_str("\"+64 21 123 4567\"").unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"+64211234567\"");
        let r: Region = serde_json::from_str("\"nz\"").unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"NZ\"");
        let d: DomainName = serde_json::from_str("\"Example.com.\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"example.com\"");
        let t = VerificationToken::generate();
        let back: VerificationToken =
            serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn invalid_values_are_refused_with_the_message() {
        let err = serde_json::from_str::<EmailAddress>("\"a@b@c\"").unwrap_err();
        assert!(err.to_string().contains("more than one @"), "{err}");
        assert!(serde_json::from_str::<DomainName>("42").is_err());
    }
}
