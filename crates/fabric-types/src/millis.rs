//! Serde for the timestamps the API answers with: RFC 3339 in UTC with exactly three
//! fractional digits (`2026-01-01T00:00:00.100Z`, where `time`'s own RFC 3339 would drop
//! the trailing zeros). Any RFC 3339 timestamp is read.

use serde::{Deserialize, Deserializer, Serializer};
use time::OffsetDateTime;

use crate::format_timestamp;

pub fn serialize<S: Serializer>(at: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_timestamp(*at))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
    time::serde::rfc3339::deserialize(d)
}

/// The same for an optional timestamp.
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(at: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => super::serialize(at, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| {
                OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
                    .map_err(serde::de::Error::custom)
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};
    use time::OffsetDateTime;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct At {
        #[serde(with = "super")]
        at: OffsetDateTime,
        #[serde(with = "super::option")]
        maybe: Option<OffsetDateTime>,
    }

    #[test]
    fn three_digits_even_with_trailing_zeros_and_any_rfc3339_read_back() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_170_000_000).unwrap();
        let json = serde_json::to_value(At {
            at,
            maybe: Some(at),
        })
        .unwrap();
        assert_eq!(json["at"], "2023-11-14T22:13:20.170Z");
        assert_eq!(json["maybe"], "2023-11-14T22:13:20.170Z");
        let back: At =
            serde_json::from_str(r#"{"at": "2023-11-14T22:13:20.17Z", "maybe": null}"#).unwrap();
        assert_eq!(back, At { at, maybe: None });
    }
}
