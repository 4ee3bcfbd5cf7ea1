//! The toolkit every CRM's mapping is written with: tolerant readers of records (ids as numbers or
//! strings, timestamps as RFC 3339, epoch seconds or epoch milliseconds, strings trimmed, empty strings
//! absent, wrong types ignored), the [`Draft`] a mapper fills and normalizes into a `Contact`, and the
//! membership checks an update body needs. Each CRM's own field names are in its folder
//! (`rex/mapping.rs`, `followupboss/mapping.rs`, `lofty/mapping.rs`).

use chrono::{DateTime, Utc};
use crmsync_domain::json::{self, Json, normalize_email};
use crmsync_domain::{Contact, Mapped, PhoneNumber, Provider, Region, SkipReason, Skipped};
use serde_json::{Map, Value};

/// At most this many phone / e-mail candidates are looked at per record (bounds the work a
/// hostile record can cause).
const MAX_CANDIDATES: usize = 50;

/// Values for one field, in the order they should be tried: preferred (primary) ones first.
#[derive(Debug, Default)]
pub(crate) struct Candidates {
    preferred: Vec<String>,
    others: Vec<String>,
}

impl Candidates {
    pub(crate) fn add(&mut self, value: Option<String>, preferred: bool) {
        let Some(v) = value else { return };
        if self.preferred.len() + self.others.len() >= MAX_CANDIDATES {
            return;
        }
        if preferred {
            self.preferred.push(v);
        } else {
            self.others.push(v);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.preferred.is_empty() && self.others.is_empty()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> {
        self.preferred
            .iter()
            .chain(&self.others)
            .map(String::as_str)
    }
}

/// What a mapper read from a record, before normalization.
#[derive(Debug, Default)]
pub(crate) struct Draft {
    pub external_id: Option<String>,
    pub name: Option<String>,
    pub emails: Candidates,
    pub phones: Candidates,
    pub notes: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    /// The CRM marks the record deleted (trashed, archived).
    pub deleted: bool,
}

impl Draft {
    /// The first phone that parses: preferred ones first, then the list order. No phone at all
    /// is `NoPhone`; phones present but none valid is `InvalidPhone`.
    pub(crate) fn phone(&self, region: Region) -> Result<PhoneNumber, SkipReason> {
        if self.phones.is_empty() {
            return Err(SkipReason::NoPhone);
        }
        self.phones
            .iter()
            .find_map(|raw| PhoneNumber::parse(raw, region).ok())
            .ok_or(SkipReason::InvalidPhone)
    }

    /// The first e-mail that is valid, preferred ones first.
    pub(crate) fn email(&self) -> Option<String> {
        self.emails.iter().find_map(normalize_email)
    }

    pub(crate) fn finish(self, source: Provider, region: Region) -> Mapped {
        let phone = match self.phone(region) {
            Ok(p) => p,
            Err(reason) => {
                return Mapped::Skipped(Skipped {
                    external_id: self.external_id,
                    reason,
                    updated_at: self.updated_at,
                    deleted: self.deleted,
                });
            }
        };
        let email = self.email();
        let name = self.name.as_deref().and_then(json::clean_name);
        Mapped::Contact(Contact {
            external_id: self.external_id,
            name,
            email,
            phone,
            notes: self.notes.and_then(|n| {
                let t = n.trim();
                (!t.is_empty()).then(|| t.to_owned())
            }),
            updated_at: self.updated_at,
            created_at: self.created_at,
            source,
            deleted: self.deleted,
        })
    }
}

/// The value of a list entry that may be a plain string (or number) or an object carrying the
/// value under one of `keys`.
pub(crate) fn entry_value<J: Json>(item: &J, keys: &[&str]) -> Option<String> {
    if item.is_map() {
        keys.iter()
            .find_map(|k| json::field(item, k).and_then(json::text_or_integer))
    } else {
        json::text_or_integer(item)
    }
}

/// Whether a list entry object is flagged primary under any of `keys`.
pub(crate) fn entry_primary<J: Json>(item: &J, keys: &[&str]) -> bool {
    keys.iter().any(|k| json::truthy(json::field(item, k)))
}

/// The first of `keys` that holds a readable time.
pub(crate) fn first_time<J: Json>(v: &J, keys: &[&str]) -> Option<DateTime<Utc>> {
    keys.iter()
        .find_map(|k| json::field(v, k).and_then(json::time))
}

/// Whether `list` already holds `email` (case-insensitive, trimmed).
pub(crate) fn has_email<'a>(mut list: impl Iterator<Item = &'a str>, email: &str) -> bool {
    list.any(|e| e.trim().eq_ignore_ascii_case(email.trim()))
}

/// Whether `list` (phones as the CRM stores them, typed in any form) holds `phone`, read the way the
/// account reads numbers: see [`is_phone`].
pub(crate) fn has_phone<'a>(
    mut list: impl Iterator<Item = &'a str>,
    phone: &PhoneNumber,
    region: Region,
) -> bool {
    list.any(|raw| is_phone(raw, phone, region))
}

/// Whether `raw`, a phone as a CRM stores it, is `phone`: parsed in `region` (the account's, where
/// a number without a country code is read) and compared in E.164, as the pull reads it. A string
/// that is no valid number in `region` is compared by its digits with the number's international
/// digits (`61412345678` for `+61412345678`, one of the forms a search sends,
/// [`PhoneNumber::typed_forms`]).
pub(crate) fn is_phone(raw: &str, phone: &PhoneNumber, region: Region) -> bool {
    match PhoneNumber::parse(raw, region) {
        Ok(parsed) => parsed == *phone,
        Err(_) => {
            let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
            digits == phone.as_str().trim_start_matches('+')
        }
    }
}

/// The region an update body reads a record's phones in. `update` is not given the account's
/// region; the record it updates comes from `find_by_phone`, which confirmed the phone on it in
/// that region, and the number's own region reads the same forms as the same number.
pub(crate) fn own_region(phone: &PhoneNumber) -> Region {
    phone.region().unwrap_or_default()
}

/// Inserts `key: value` into `m` when `value` is `Some`.
pub(crate) fn put(m: &mut Map<String, Value>, key: &str, value: Option<impl Into<Value>>) {
    if let Some(v) = value {
        m.insert(key.to_owned(), v.into());
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Deterministic junk generator shared by the mappers' no-panic tests.
    use serde_json::{Map, Value, json};

    pub struct Junk(u64);

    impl Junk {
        pub fn new(seed: u64) -> Self {
            Junk(seed | 1)
        }

        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[(self.next() % items.len() as u64) as usize]
        }

        /// A random value whose object keys come from `keys`, nested up to `depth`.
        pub fn value(&mut self, keys: &[&str], depth: u32) -> Value {
            let scalars = [
                json!(null),
                json!(true),
                json!(0),
                json!(-1),
                json!(651095960136641_i64),
                json!(u64::MAX),
                json!(1.5e300),
                json!(1694194202),
                json!("1694194202"),
                json!(""),
                json!("   "),
                json!("(415) 555-0123"),
                json!("0412 345 678"),
                json!("not a phone"),
                json!("jane@example.com"),
                json!("2024-05-01T10:00:00Z"),
                json!("é✓\u{0}"),
            ];
            let kind = self.next() % 10;
            if depth == 0 || kind < 5 {
                return scalars[(self.next() % scalars.len() as u64) as usize].clone();
            }
            if kind < 7 {
                let n = self.next() % 4;
                return Value::Array((0..n).map(|_| self.value(keys, depth - 1)).collect());
            }
            let n = self.next() % 6;
            let mut m = Map::new();
            for _ in 0..n {
                let k = self.pick(keys).to_owned();
                let v = self.value(keys, depth - 1);
                m.insert(k, v);
            }
            Value::Object(m)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crmsync_domain::json::Loose;
    use serde_json::json;

    /// A list page's records are mapped from [`Loose`] values borrowing from the body; every mapper
    /// must read them exactly as it reads `serde_json::Value`s of the same text.
    #[test]
    fn records_map_the_same_from_borrowed_json() {
        let keys = [
            "id",
            "leadId",
            "_id",
            "lead",
            "name",
            "firstName",
            "lastName",
            "name_first",
            "name_last",
            "emails",
            "phones",
            "phone",
            "email",
            "value",
            "number",
            "phone_number",
            "isPrimary",
            "primary",
            "updated",
            "created",
            "updateTime",
            "createTime",
            "stage",
            "related",
            "contact_phones",
            "contact_names",
            "contact_emails",
            "phone_primary",
            "system_modtime",
            "system_record_state",
            "background",
            "notes",
            "primary_phone",
            "email_address",
        ];
        let mut junk = test_support::Junk::new(29);
        let mut texts: Vec<String> = (0..4000)
            .map(|_| junk.value(&keys, 4).to_string())
            .collect();
        // Duplicate keys (the last one counts), escapes, and numbers past i64.
        texts.push(
            r#"{"id": 1, "id": "2", "phones": ["4155550123"], "phones": ["4155550124"]}"#.into(),
        );
        texts.push(
            r#"{"id": "\u0033", "name": "A\tB", "phones": [{"value": "415\u0020555 0125"}]}"#
                .into(),
        );
        texts.push(
            r#"{"id": 18446744073709551615, "phones": [4155550126], "updated": 1.7e9}"#.into(),
        );
        for text in &texts {
            let value: Value = serde_json::from_str(text).unwrap();
            let loose: Loose = serde_json::from_str(text).unwrap();
            for region in [Region::US, Region::AU] {
                assert_eq!(
                    crate::followupboss::mapping::map_person(&value, region),
                    crate::followupboss::mapping::map_person(&loose, region),
                    "{text}"
                );
                assert_eq!(
                    crate::lofty::mapping::map_lead(&value, region),
                    crate::lofty::mapping::map_lead(&loose, region),
                    "{text}"
                );
                assert_eq!(
                    crate::rex::mapping::map_contact(&value, region),
                    crate::rex::mapping::map_contact(&loose, region),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn dispatch_uses_the_providers_mapper() {
        let fub = json!({"id": 1, "name": "A", "phones": [{"value": "4155550123"}]});
        let lofty = json!({"leadId": 2, "firstName": "B", "phones": ["4155550124"]});
        let rex = json!({"id": 3, "name": "C", "phone_number": "4155550125"});
        let get = |p, v: &Value| crate::map_record(p, v, Region::US).into_contact().unwrap();
        assert_eq!(
            get(Provider::FollowUpBoss, &fub).source,
            Provider::FollowUpBoss
        );
        assert_eq!(get(Provider::Lofty, &lofty).phone.as_str(), "+14155550124");
        assert_eq!(get(Provider::Rex, &rex).display_name(), "C");
        // The id field differs per CRM: FUB reads `id`, so a Lofty record has no FUB id.
        assert_eq!(
            crate::map_record(Provider::FollowUpBoss, &lofty, Region::US).external_id(),
            None
        );
        assert_eq!(
            crate::map_record(Provider::Lofty, &lofty, Region::US).external_id(),
            Some("2")
        );
    }

    #[test]
    fn a_record_without_a_name_has_none_and_shows_its_email_then_its_phone() {
        let mut d = Draft::default();
        d.phones.add(Some("415 555 0123".into()), false);
        d.emails.add(Some(" Who@Example.com".into()), false);
        let c = d.finish(Provider::Rex, Region::US).into_contact().unwrap();
        assert_eq!(c.name, None);
        assert_eq!(c.display_name(), "who@example.com");

        let mut d = Draft::default();
        d.phones.add(Some("415 555 0123".into()), false);
        d.name = Some("   ".into());
        let c = d.finish(Provider::Rex, Region::US).into_contact().unwrap();
        assert_eq!(c.name, None);
        assert_eq!(c.display_name(), "+14155550123");
    }

    #[test]
    fn preferred_phone_wins_only_if_it_parses() {
        let mut d = Draft::default();
        d.phones.add(Some("not a number".into()), true);
        d.phones.add(Some("12".into()), false);
        d.phones.add(Some("(415) 555-0199".into()), false);
        assert_eq!(d.phone(Region::US).unwrap().as_str(), "+14155550199");

        let mut d = Draft::default();
        d.phones.add(Some("(415) 555-0199".into()), false);
        d.phones.add(Some("0412 345 678".into()), true);
        assert_eq!(d.phone(Region::AU).unwrap().as_str(), "+61412345678");
    }

    #[test]
    fn phone_and_email_membership() {
        let p = PhoneNumber::parse("+14155550123", Region::US).unwrap();
        assert!(has_phone(["(415) 555-0123"].into_iter(), &p, Region::US));
        assert!(has_phone(["14155550123"].into_iter(), &p, Region::US));
        assert!(!has_phone(
            ["(415) 555-0124", "junk"].into_iter(),
            &p,
            Region::US
        ));
        assert!(has_email([" A@B.co "].into_iter(), "a@b.co"));
        assert!(!has_email(["ab.co"].into_iter(), "a@b.co"));
    }

    /// Stored phones are read in the account's region, as the pull reads them: a national form is
    /// the number only in its own country, and the international digits match anywhere.
    #[test]
    fn stored_phones_are_read_in_the_account_s_region() {
        let au = PhoneNumber::from_e164("+61412345678").unwrap();
        for raw in [
            "0412 345 678",
            "0412345678",
            "+61 412 345 678",
            "61412345678",
        ] {
            assert!(is_phone(raw, &au, Region::AU), "{raw}");
        }
        assert!(!is_phone("0412 345 678", &au, Region::US));
        assert!(is_phone("+61 412 345 678", &au, Region::US));
        assert!(is_phone("61412345678", &au, Region::US));
        assert!(!is_phone("0412 345 679", &au, Region::AU));
        assert!(!is_phone("", &au, Region::AU));

        let us = PhoneNumber::from_e164("+14155550142").unwrap();
        for raw in [
            "(415) 555-0142",
            "415-555-0142",
            "4155550142",
            "14155550142",
        ] {
            assert!(is_phone(raw, &us, Region::US), "{raw}");
        }
        // In an Australian account a number without a country code is Australian (crm-apis §4).
        assert!(!is_phone("(415) 555-0142", &us, Region::AU));
        assert!(is_phone("+1 415-555-0142", &us, Region::AU));
        assert!(is_phone("14155550142", &us, Region::AU));
    }
}
