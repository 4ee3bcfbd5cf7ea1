//! Tolerant readers for loosely typed JSON coming from CRMs and webhooks (the CRM mappers of
//! `crmsync-crm` and the lead webhook's payload both read through them).
//!
//! Every reader returns `None` for values of the wrong type instead of failing, so a record with
//! junk in one field still maps its other fields.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::Value;

pub use crate::loose::Loose;

/// A JSON number as the readers see it: serde_json's three kinds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    /// A non-negative integer.
    Pos(u64),
    /// A negative integer.
    Neg(i64),
    Float(f64),
}

impl Num {
    pub fn as_i64(self) -> Option<i64> {
        match self {
            Num::Pos(u) => i64::try_from(u).ok(),
            Num::Neg(i) => Some(i),
            Num::Float(_) => None,
        }
    }

    pub fn as_u64(self) -> Option<u64> {
        match self {
            Num::Pos(u) => Some(u),
            Num::Neg(_) | Num::Float(_) => None,
        }
    }

    pub fn as_f64(self) -> f64 {
        match self {
            Num::Pos(u) => u as f64,
            Num::Neg(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// A JSON value the tolerant readers can read: serde_json's [`Value`] (a whole document, owned), or
/// [`Loose`] (a list page's records, borrowing their strings from the body they were parsed from).
/// Every reader below is written once over this trait and reads both the same way.
pub trait Json: Sized {
    /// `self[key]` when `self` is an object (the last of duplicate keys, as `Value` keeps it).
    fn key(&self, key: &str) -> Option<&Self>;
    fn str(&self) -> Option<&str>;
    fn num(&self) -> Option<Num>;
    fn bool(&self) -> Option<bool>;
    /// The elements when `self` is an array.
    fn list(&self) -> Option<&[Self]>;
    fn is_map(&self) -> bool;
    fn is_null(&self) -> bool;
}

impl Json for Value {
    fn key(&self, key: &str) -> Option<&Self> {
        self.as_object()?.get(key)
    }
    fn str(&self) -> Option<&str> {
        self.as_str()
    }
    fn num(&self) -> Option<Num> {
        let n = self.as_number()?;
        if let Some(u) = n.as_u64() {
            Some(Num::Pos(u))
        } else if let Some(i) = n.as_i64() {
            Some(Num::Neg(i))
        } else {
            n.as_f64().map(Num::Float)
        }
    }
    fn bool(&self) -> Option<bool> {
        self.as_bool()
    }
    fn list(&self) -> Option<&[Self]> {
        self.as_array().map(Vec::as_slice)
    }
    fn is_map(&self) -> bool {
        self.is_object()
    }
    fn is_null(&self) -> bool {
        Value::is_null(self)
    }
}

/// Epoch numbers above this are milliseconds (10^11 s is the year 5138).
const MILLIS_THRESHOLD: f64 = 1e11;

/// `s` cut to at most `max` characters (on a char boundary), with `…` when cut.
pub fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

/// `s` cut to at most `max` characters, on a char boundary, without any marker.
pub fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => s[..at].to_owned(),
        None => s.to_owned(),
    }
}

/// `v[key]` when `v` is an object; `None` for any other shape.
pub fn field<'a, J: Json>(v: &'a J, key: &str) -> Option<&'a J> {
    v.key(key)
}

/// A trimmed, non-empty string. Only JSON strings qualify.
pub fn text<J: Json>(v: &J) -> Option<String> {
    let s = v.str()?.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// [`text`] of `v[key]`.
pub fn text_at<J: Json>(v: &J, key: &str) -> Option<String> {
    field(v, key).and_then(text)
}

/// The first of `keys` that holds a usable [`text`].
pub fn first_text<J: Json>(v: &J, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| text_at(v, k))
}

/// A trimmed string, or an integer rendered in decimal. Used for phone numbers, which some
/// systems send as JSON numbers.
pub fn text_or_integer<J: Json>(v: &J) -> Option<String> {
    text(v).or_else(|| integer_string(v))
}

/// An identifier: a trimmed non-empty string, or an integral JSON number rendered exactly.
/// Integers are read as i64/u64, never through f64 (Lofty ids are int64); a float is accepted
/// only when it is integral and exactly representable (|x| < 2^53).
pub fn id<J: Json>(v: &J) -> Option<String> {
    text(v).or_else(|| integer_string(v))
}

fn integer_string<J: Json>(v: &J) -> Option<String> {
    let n = v.num()?;
    if let Some(i) = n.as_i64() {
        return Some(i.to_string());
    }
    if let Some(u) = n.as_u64() {
        return Some(u.to_string());
    }
    let f = n.as_f64();
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if f.is_finite() && f.fract() == 0.0 && f.abs() < EXACT {
        // Integral and below 2^53, so the conversion is exact.
        Some(format!("{}", f as i64))
    } else {
        None
    }
}

/// Truthiness as CRMs spell it: `true`, non-zero numbers, `"true"`, `"1"`, `"yes"`, `"y"`, `"t"`.
pub fn truthy<J: Json>(v: Option<&J>) -> bool {
    let Some(v) = v else { return false };
    if let Some(b) = v.bool() {
        b
    } else if let Some(n) = v.num() {
        n.as_f64() != 0.0
    } else if let Some(s) = v.str() {
        matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "true" | "1" | "yes" | "y" | "t"
        )
    } else {
        false
    }
}

/// A point in time from any of the shapes CRMs use: RFC 3339 strings (also with a space instead
/// of `T`, or without an offset, read as UTC), bare dates, epoch seconds (integer, float or
/// numeric string) and epoch milliseconds (any number above 10^11). Zero, negative and
/// out-of-range values are `None`.
pub fn time<J: Json>(v: &J) -> Option<DateTime<Utc>> {
    if let Some(n) = v.num() {
        if let Some(i) = n.as_i64() {
            epoch_integer(i)
        } else {
            epoch_float(n.as_f64())
        }
    } else {
        v.str().and_then(time_str)
    }
}

/// [`time`] for a string.
pub fn time_str(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    if s.bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
        && !s.contains(':')
    {
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return s.parse::<i64>().ok().and_then(epoch_integer);
        }
        if let Ok(f) = s.parse::<f64>() {
            return epoch_float(f);
        }
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%dT%H:%M:%S%.f%#z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    let naive = s.strip_suffix(['Z', 'z']).unwrap_or(s);
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(naive, fmt) {
            return Some(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

fn epoch_integer(i: i64) -> Option<DateTime<Utc>> {
    if i <= 0 {
        None
    } else if (i as f64) > MILLIS_THRESHOLD {
        DateTime::from_timestamp_millis(i)
    } else {
        DateTime::from_timestamp(i, 0)
    }
}

fn epoch_float(f: f64) -> Option<DateTime<Utc>> {
    if !f.is_finite() || f <= 0.0 || f >= 1e17 {
        return None;
    }
    let secs = if f > MILLIS_THRESHOLD { f / 1000.0 } else { f };
    let whole = secs.trunc();
    let nanos = ((secs - whole) * 1e9).round().clamp(0.0, 999_999_999.0);
    // Both values are finite and bounded above, so the casts cannot saturate meaningfully.
    DateTime::from_timestamp(whole as i64, nanos as u32)
}

/// Elements of `v` when it is an array; an empty slice otherwise (null, object, scalar).
pub fn array<J: Json>(v: Option<&J>) -> &[J] {
    v.and_then(J::list).unwrap_or(&[])
}

/// Collapses runs of whitespace to one space and trims; `None` when nothing is left.
pub fn clean_name(s: &str) -> Option<String> {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    (!joined.is_empty()).then_some(joined)
}

/// `first last` from optional parts, whitespace-collapsed; `None` when both are empty.
pub fn join_name(first: Option<&str>, last: Option<&str>) -> Option<String> {
    let joined = [first, last]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    clean_name(&joined)
}

/// An e-mail address trimmed and lower-cased, with exactly one `@` that has text on both sides
/// and no whitespace; `None` otherwise.
pub fn normalize_email(raw: &str) -> Option<String> {
    let s = raw.trim();
    let s = s
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("mailto:"))
        .map_or(s, |_| &s[7..])
        .trim();
    if s.is_empty() || s.len() > 254 || s.chars().any(char::is_whitespace) {
        return None;
    }
    let (local, domain) = s.split_once('@')?;
    if local.is_empty() || domain.is_empty() || domain.contains('@') {
        return None;
    }
    Some(s.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn ids_keep_every_digit_of_int64_and_accept_strings() {
        assert_eq!(
            id(&json!(651095960136641_i64)).as_deref(),
            Some("651095960136641")
        );
        assert_eq!(
            id(&json!(9223372036854775807_i64)).as_deref(),
            Some("9223372036854775807")
        );
        assert_eq!(
            id(&json!(18446744073709551615_u64)).as_deref(),
            Some("18446744073709551615")
        );
        assert_eq!(id(&json!(" 102 ")).as_deref(), Some("102"));
        assert_eq!(id(&json!(102.0)).as_deref(), Some("102"));
        assert_eq!(id(&json!(1.5)), None);
        assert_eq!(id(&json!(1e300)), None);
        assert_eq!(id(&json!("")), None);
        assert_eq!(id(&json!(null)), None);
        assert_eq!(id(&json!({"id": 1})), None);
        assert_eq!(id(&json!([1])), None);
    }

    #[test]
    fn times_from_every_shape() {
        let t = at("2023-09-08T17:30:02Z");
        assert_eq!(time(&json!(1694194202)), Some(t));
        assert_eq!(time(&json!("1694194202")), Some(t));
        assert_eq!(time(&json!(1694194202000_i64)), Some(t));
        assert_eq!(time(&json!("1694194202000")), Some(t));
        assert_eq!(time(&json!(1694194202.0)), Some(t));
        assert_eq!(time(&json!("2023-09-08T17:30:02Z")), Some(t));
        assert_eq!(time(&json!("2023-09-08T19:30:02+02:00")), Some(t));
        assert_eq!(time(&json!("2023-09-08 17:30:02")), Some(t));
        assert_eq!(time(&json!("2023-09-08T17:30:02")), Some(t));
        assert_eq!(time(&json!("2023-09-08 17:30:02+00")), Some(t));
        assert_eq!(time(&json!("2023-09-08")), Some(at("2023-09-08T00:00:00Z")));
        assert_eq!(
            time(&json!("2024-01-15T10:30:00.123456+00:00")),
            Some(at("2024-01-15T10:30:00.123456Z"))
        );
        assert_eq!(
            time(&json!(1694194202.5)),
            Some(at("2023-09-08T17:30:02.5Z"))
        );
    }

    #[test]
    fn junk_times_are_absent() {
        for v in [
            json!(null),
            json!(0),
            json!(-5),
            json!(""),
            json!("  "),
            json!("yesterday"),
            json!("2023-13-45"),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(1e300),
            json!(true),
            json!([1694194202]),
            json!({"t": 1}),
            json!("9".repeat(500)),
        ] {
            assert_eq!(time(&v), None, "{v}");
        }
    }

    #[test]
    fn emails_are_lower_cased_and_need_one_at_sign() {
        assert_eq!(
            normalize_email("  Jane.Doe@Example.COM ").as_deref(),
            Some("jane.doe@example.com")
        );
        assert_eq!(normalize_email("mailto:a@b.co").as_deref(), Some("a@b.co"));
        for bad in [
            "",
            "jane",
            "@example.com",
            "jane@",
            "a@b@c",
            "jane doe@x.com",
        ] {
            assert_eq!(normalize_email(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_collapse_whitespace() {
        assert_eq!(
            join_name(Some("  Mary\t"), Some(" Ann  Lee ")).as_deref(),
            Some("Mary Ann Lee")
        );
        assert_eq!(join_name(None, Some("Lee")).as_deref(), Some("Lee"));
        assert_eq!(join_name(Some(" "), None), None);
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate_chars("Zoë-Éléonore", 3), "Zoë");
        assert_eq!(truncate_chars("ab", 30), "ab");
        assert_eq!(shorten("abcdef", 3), "abc…");
        assert_eq!(shorten("abc", 3), "abc");
    }

    #[test]
    fn truthiness_as_crms_spell_it() {
        assert!(truthy(Some(&json!(true))));
        assert!(truthy(Some(&json!(1))));
        assert!(truthy(Some(&json!("1"))));
        assert!(truthy(Some(&json!(" True "))));
        assert!(!truthy(Some(&json!(0))));
        assert!(!truthy(Some(&json!("0"))));
        assert!(!truthy(Some(&json!(null))));
        assert!(!truthy(Some(&json!({}))));
        assert!(!truthy::<Value>(None));
    }
}
