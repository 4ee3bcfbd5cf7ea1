//! [`Loose`]: a JSON value that borrows its strings from the text it was parsed from.
//!
//! A CRM's list page is read once and mapped at once; parsing it into `serde_json::Value` allocated
//! every key and every string of every record (and a tree map per object) only to drop them after the
//! mapping. `Loose` keeps objects as a list of pairs and strings as slices of the body (owned only where
//! the text has escapes), and reads through the same tolerant readers ([`crate::json::Json`]).

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::json::{Json, Num};

/// A JSON value borrowing from its source text. Objects keep their pairs in order; a lookup takes
/// the last of duplicate keys, as `serde_json::Value` does.
#[derive(Debug, Clone, PartialEq)]
pub enum Loose<'a> {
    Null,
    Bool(bool),
    Num(Num),
    Str(Cow<'a, str>),
    Arr(Vec<Loose<'a>>),
    Obj(Vec<(Cow<'a, str>, Loose<'a>)>),
}

impl<'a> Json for Loose<'a> {
    fn key(&self, key: &str) -> Option<&Self> {
        match self {
            Loose::Obj(pairs) => pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    fn str(&self) -> Option<&str> {
        match self {
            Loose::Str(s) => Some(s),
            _ => None,
        }
    }
    fn num(&self) -> Option<Num> {
        match self {
            Loose::Num(n) => Some(*n),
            _ => None,
        }
    }
    fn bool(&self) -> Option<bool> {
        match self {
            Loose::Bool(b) => Some(*b),
            _ => None,
        }
    }
    fn list(&self) -> Option<&[Self]> {
        match self {
            Loose::Arr(items) => Some(items),
            _ => None,
        }
    }
    fn is_map(&self) -> bool {
        matches!(self, Loose::Obj(_))
    }
    fn is_null(&self) -> bool {
        matches!(self, Loose::Null)
    }
}

impl<'a> Loose<'a> {
    /// The array under `key`, moved out of this object (`None` when there is none).
    pub fn take_list(&mut self, key: &str) -> Option<Vec<Loose<'a>>> {
        let Loose::Obj(pairs) = self else { return None };
        let (_, v) = pairs.iter_mut().rev().find(|(k, _)| k == key)?;
        match std::mem::replace(v, Loose::Null) {
            Loose::Arr(items) => Some(items),
            other => {
                *v = other;
                None
            }
        }
    }
}

struct LooseVisitor;

impl<'de> Visitor<'de> for LooseVisitor {
    type Value = Loose<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(Loose::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Self::Value, E> {
        Ok(Loose::Num(match u64::try_from(i) {
            Ok(u) => Num::Pos(u),
            Err(_) => Num::Neg(i),
        }))
    }
    fn visit_u64<E>(self, u: u64) -> Result<Self::Value, E> {
        Ok(Loose::Num(Num::Pos(u)))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Self::Value, E> {
        Ok(Loose::Num(Num::Float(f)))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Owned(s)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Loose::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Loose::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Loose::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Loose::Arr(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(Key(k)) = map.next_key()? {
            pairs.push((k, map.next_value()?));
        }
        Ok(Loose::Obj(pairs))
    }
}

impl<'de> Deserialize<'de> for Loose<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LooseVisitor)
    }
}

/// An object key, borrowed where the text has no escapes (`Cow`'s own `Deserialize` always copies).
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json;
    use serde_json::Value;

    fn both(text: &str) -> (Value, Loose<'_>) {
        (
            serde_json::from_str(text).unwrap(),
            serde_json::from_str(text).unwrap(),
        )
    }

    #[test]
    fn reads_as_value_reads() {
        let text = r#"{"id": 651095960136641, "neg": -5, "f": 102.0, "big": 18446744073709551615,
            "s": " a\"b ", "t": "2023-09-08T17:30:02Z", "ok": "yes", "n": null,
            "list": [1, "x", {"value": "v"}], "dup": 1, "dup": "last"}"#;
        let (v, l) = both(text);
        for key in [
            "id", "neg", "f", "big", "s", "t", "ok", "n", "list", "dup", "none",
        ] {
            let (a, b) = (json::field(&v, key), json::field(&l, key));
            assert_eq!(a.and_then(json::id), b.and_then(json::id), "{key}");
            assert_eq!(a.and_then(json::text), b.and_then(json::text), "{key}");
            assert_eq!(a.and_then(json::time), b.and_then(json::time), "{key}");
            assert_eq!(json::truthy(a), json::truthy(b), "{key}");
            assert_eq!(json::array(a).len(), json::array(b).len(), "{key}");
        }
        assert_eq!(json::text_at(&l, "dup").as_deref(), Some("last"));
        // Strings without escapes are borrowed from the text.
        assert!(matches!(l.key("t"), Some(Loose::Str(Cow::Borrowed(_)))));
        assert!(matches!(l.key("s"), Some(Loose::Str(Cow::Owned(_)))));
    }

    #[test]
    fn a_list_is_moved_out() {
        let mut l: Loose = serde_json::from_str(r#"{"people": [{"id": 1}], "x": 2}"#).unwrap();
        assert_eq!(l.take_list("people").map(|p| p.len()), Some(1));
        assert_eq!(l.take_list("people"), None);
        assert_eq!(l.take_list("x"), None);
        assert_eq!(json::id(l.key("x").unwrap()).as_deref(), Some("2"));
    }

    #[test]
    fn bad_text_is_an_error() {
        assert!(serde_json::from_str::<Loose>(r#"{"a": [1, }"#).is_err());
        assert!(serde_json::from_str::<Loose>(&"[".repeat(1000)).is_err());
    }
}
