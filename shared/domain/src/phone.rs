//! Phone numbers, always stored and compared in E.164.

use std::fmt;
use std::str::FromStr;

use rlibphonenumber::{PHONE_NUMBER_UTIL, ParseError, PhoneNumberFormat};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest raw input handed to the phone parser. Real numbers with formatting and an extension
/// fit easily; longer strings are junk (and keep the parser's work bounded).
const MAX_RAW_LEN: usize = 64;

/// The region used to read numbers written without a country code (`"(415) 555-0123"` is a US
/// number only if the default region is US). ISO 3166-1 alpha-2, one the phone-number metadata
/// knows; defaults to US.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region([u8; 2]);

impl Region {
    pub const US: Region = Region(*b"US");
    pub const AU: Region = Region(*b"AU");
    pub const GB: Region = Region(*b"GB");
    pub const CA: Region = Region(*b"CA");
    pub const NZ: Region = Region(*b"NZ");

    /// The parser's region (two upper-case ASCII letters make one, always).
    fn id(self) -> rlibphonenumber::Region {
        rlibphonenumber::Region::from_code(self.as_str()).unwrap_or(rlibphonenumber::Region::US)
    }

    /// The metadata's geographic region, if `id` is one (not the non-geographic `001`).
    fn from_id(id: rlibphonenumber::Region) -> Option<Region> {
        match id.as_region_str().as_bytes() {
            &[a, b] => Some(Region([a, b])),
            _ => None,
        }
    }

    /// The two-letter code, upper case (`"US"`).
    pub fn as_str(&self) -> &str {
        // Built only from two ASCII letters.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl Default for Region {
    fn default() -> Self {
        Region::US
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Region").field(&self.as_str()).finish()
    }
}

/// A string that is not an ISO 3166-1 alpha-2 region known to the phone-number metadata.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown phone region {0:?}: expected an ISO 3166-1 alpha-2 code such as \"US\", \"AU\" or \"GB\""
)]
pub struct UnknownRegion(pub String);

impl FromStr for Region {
    type Err = UnknownRegion;

    /// Case-insensitive, surrounding whitespace ignored: `"US"`, `"au"`, `" gb "`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let code = s.trim();
        if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(UnknownRegion(crate::json::shorten(s, 20)));
        }
        let upper = code.to_ascii_uppercase();
        let region = Region([upper.as_bytes()[0], upper.as_bytes()[1]]);
        // The parser names every pair of letters; only those its metadata has are regions.
        match PHONE_NUMBER_UTIL.get_country_code_for_region(region.id()) {
            Some(_) => Ok(region),
            None => Err(UnknownRegion(code.to_owned())),
        }
    }
}

impl Serialize for Region {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Region {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a string is not a usable phone number. The reason never repeats the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("phone number is empty")]
    Empty,
    #[error("invalid phone number: {0}")]
    Invalid(String),
}

/// A fixed sentence for a parser error (never the input).
fn parse_error_reason(e: &ParseError) -> &'static str {
    match e {
        ParseError::InvalidCountryCode => "invalid country code",
        ParseError::NotANumber(_) => "not a phone number",
        ParseError::TooShortAfterIdd | ParseError::TooShortNsn => "too short",
        ParseError::TooLongNsn => "too long",
    }
}

/// A valid phone number in E.164 (`"+14155550123"`). The only ways to build one are
/// [`PhoneNumber::parse`] and the strict [`PhoneNumber::from_e164`] (also used by
/// `Deserialize` and `FromStr`), so holding one means the number is valid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Reads a phone number in any common written form and returns it in E.164.
    ///
    /// Numbers without a country code are read in `default_region`. Punctuation, a `tel:` URI
    /// form and extensions (`x12`, `ext. 12`, `;ext=12`) are accepted; extensions are dropped.
    /// Empty input is [`PhoneError::Empty`]; anything that is not a valid number for its region
    /// (letters only, too short, unassigned ranges) is [`PhoneError::Invalid`].
    pub fn parse(raw: &str, default_region: Region) -> Result<PhoneNumber, PhoneError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(PhoneError::Empty);
        }
        if s.chars().count() > MAX_RAW_LEN {
            return Err(PhoneError::Invalid(format!(
                "longer than {MAX_RAW_LEN} characters"
            )));
        }
        let digits = s.chars().filter(char::is_ascii_digit).count();
        if digits == 0 {
            return Err(PhoneError::Invalid("no digits".into()));
        }
        if digits < 5 {
            return Err(PhoneError::Invalid("too short".into()));
        }
        if s.chars().any(char::is_control) {
            return Err(PhoneError::Invalid("control characters".into()));
        }
        // Input from CRMs is untrusted: a panic in the parser (it panics on what it considers a bug
        // of its own) must not take down a sync. A number written with its country code is read as
        // such whatever the default region (tested below: `phonenumber`, used before, did not).
        let parsed = std::panic::catch_unwind(|| {
            let number = PHONE_NUMBER_UTIL
                .parse(s, Some(default_region.id()))
                .map_err(|e| PhoneError::Invalid(parse_error_reason(&e).into()))?;
            if !number.is_valid() {
                return Err(PhoneError::Invalid(
                    "not a valid number for its region".into(),
                ));
            }
            Ok(number.format_as(PhoneNumberFormat::E164).into_owned())
        })
        .unwrap_or_else(|_| Err(PhoneError::Invalid("unparseable".into())))?;
        Ok(PhoneNumber(parsed))
    }

    /// Accepts only a number already in canonical E.164 (`+` then digits, exactly as
    /// [`PhoneNumber::parse`] would render it) that is valid.
    pub fn from_e164(s: &str) -> Result<PhoneNumber, PhoneError> {
        if s.is_empty() {
            return Err(PhoneError::Empty);
        }
        let well_formed = s.len() <= 16
            && s.len() >= 4
            && s.starts_with('+')
            && s[1..].bytes().all(|b| b.is_ascii_digit());
        if !well_formed {
            return Err(PhoneError::Invalid(
                "not in E.164 form (+ and up to 15 digits)".into(),
            ));
        }
        // Any region: the leading + makes the default region irrelevant.
        let parsed = PhoneNumber::parse(s, Region::default())?;
        if parsed.0 != s {
            return Err(PhoneError::Invalid("not in canonical E.164 form".into()));
        }
        Ok(parsed)
    }

    /// The E.164 string, e.g. `"+14155550123"`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// The region the number belongs to (`+1415…` is US, `+61…` is AU), when the metadata
    /// names one; non-geographic numbers have none.
    pub fn region(&self) -> Option<Region> {
        std::panic::catch_unwind(|| {
            rlibphonenumber::PhoneNumber::parse(&self.0, None)
                .ok()?
                .get_region_code()
        })
        .ok()
        .flatten()
        .and_then(Region::from_id)
    }

    /// The written forms a person may have typed this number in, in a CRM whose numbers without a
    /// country code are read in `region` (REX and Lofty store phones as typed and search the stored
    /// string, crm-apis.md §4), most likely first, without repeats:
    ///
    /// 1. E.164, `+61412345678` (what crmsync and most integrations write);
    /// 2. only when the number is `region`'s (precisely: when its national forms read back as this
    ///    number in `region`, so also US and CA, which share +1): the NATIONAL format, `0412 345 678`, `(02) 9876 5432`, `(415) 555-0142`; its
    ///    digits, `0412345678`, `4155550142`; and for NANPA numbers (+1) the dashed
    ///    `415-555-0142`;
    /// 3. the INTERNATIONAL format, `+61 412 345 678`, `+1 415-555-0142`;
    /// 4. the international digits without `+`, `61412345678`.
    ///
    /// The formats are libphonenumber's (its metadata). A number the parser cannot read back
    /// gives its E.164 and international digits only.
    pub fn typed_forms(&self, region: Region) -> Vec<String> {
        let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
        let (international, national) = std::panic::catch_unwind(|| {
            let number = rlibphonenumber::PhoneNumber::parse(&self.0, None).ok()?;
            let international = number
                .format_as(PhoneNumberFormat::International)
                .into_owned();
            let national = Some(number.format_as(PhoneNumberFormat::National).into_owned())
                .filter(|n| PhoneNumber::parse(n, region).is_ok_and(|p| p == *self));
            Some((international, national))
        })
        .ok()
        .flatten()
        .map_or((None, None), |(i, n)| (Some(i), n));

        let mut forms = vec![self.0.clone()];
        if let Some(national) = national {
            let national_digits = digits(&national);
            forms.push(national);
            forms.push(national_digits);
            // NANPA: the international format is `+1 415-555-0142`; without its country code it
            // is the dashed form people type.
            if let Some(dashed) = international.as_deref().and_then(|i| i.strip_prefix("+1 ")) {
                forms.push(dashed.to_owned());
            }
        }
        forms.extend(international);
        forms.push(self.0.trim_start_matches('+').to_owned());
        let mut seen = std::collections::HashSet::new();
        forms.retain(|f| !f.is_empty() && seen.insert(f.clone()));
        forms
    }

    /// Whether `raw` (in any written form) denotes this number. `raw` is read in this number's
    /// own region, so a local form of the same number matches.
    pub fn matches(&self, raw: &str) -> bool {
        let region = self.region().unwrap_or_default();
        PhoneNumber::parse(raw, region).is_ok_and(|p| p == *self)
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for PhoneNumber {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for PhoneNumber {
    type Err = PhoneError;

    /// Strict: same as [`PhoneNumber::from_e164`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PhoneNumber::from_e164(s)
    }
}

impl From<PhoneNumber> for String {
    fn from(p: PhoneNumber) -> String {
        p.0
    }
}

impl Serialize for PhoneNumber {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PhoneNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        PhoneNumber::from_e164(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(s: &str) -> Result<String, PhoneError> {
        PhoneNumber::parse(s, Region::US).map(PhoneNumber::into_string)
    }

    fn au(s: &str) -> Result<String, PhoneError> {
        PhoneNumber::parse(s, Region::AU).map(PhoneNumber::into_string)
    }

    #[test]
    fn us_local_formats_become_e164() {
        for raw in [
            "(415) 555-0123",
            "415-555-0123",
            "415.555.0123",
            "4155550123",
            "1 415 555 0123",
            "+1 (415) 555-0123",
            "+14155550123",
            "  +1-415-555-0123  ",
            "tel:+1-415-555-0123",
            "(415) 555-0123 ext. 45",
            "415-555-0123 x12",
        ] {
            assert_eq!(us(raw).as_deref(), Ok("+14155550123"), "{raw}");
        }
    }

    #[test]
    fn au_local_formats_become_e164() {
        assert_eq!(au("0412 345 678").as_deref(), Ok("+61412345678"));
        assert_eq!(au("(02) 9876 5432").as_deref(), Ok("+61298765432"));
        assert_eq!(au("+61 412 345 678").as_deref(), Ok("+61412345678"));
        // An explicit country code wins over the default region.
        assert_eq!(au("+1 415 555 0123").as_deref(), Ok("+14155550123"));
        assert_eq!(us("+44 20 7946 0958").as_deref(), Ok("+442079460958"));
    }

    /// The Australian mobile range +61 496 (allocated after the metadata of `phonenumber` 0.3.10, which
    /// refused these numbers) is valid in every written form.
    #[test]
    fn au_mobiles_in_the_496_range_are_valid() {
        for raw in [
            "+61 496 123 456",
            "0496 123 456",
            "0496123456",
            "+61496123456",
        ] {
            assert_eq!(au(raw).as_deref(), Ok("+61496123456"), "{raw}");
        }
        assert_eq!(us("+61 496 123 456").as_deref(), Ok("+61496123456"));
        let p = PhoneNumber::from_e164("+61496123456").unwrap();
        assert_eq!(p.region(), Some(Region::AU));
        assert!(p.matches("0496 123 456"));
        assert_eq!(
            p.typed_forms(Region::AU),
            [
                "+61496123456",
                "0496 123 456",
                "0496123456",
                "+61 496 123 456",
                "61496123456"
            ]
        );
    }

    /// A number written with its country code is the same number whatever the default region. Before
    /// the fix, the default region's national prefix was stripped after the country code: with US,
    /// +49 151 2345 6789 became +495123456789 (another person) and these others were refused.
    #[test]
    fn international_numbers_do_not_depend_on_the_default_region() {
        for (raw, e164) in [
            ("+49 151 2345 6789", "+4915123456789"),
            ("+33 1 42 68 53 00", "+33142685300"),
            ("+44 121 496 0000", "+441214960000"),
            ("+86 138 0013 8000", "+8613800138000"),
            ("+61 412 345 678", "+61412345678"),
            ("tel:+1-415-555-0123", "+14155550123"),
        ] {
            for region in [Region::US, Region::AU, Region::GB, Region::CA, Region::NZ] {
                assert_eq!(
                    PhoneNumber::parse(raw, region).map(PhoneNumber::into_string),
                    Ok(e164.to_owned()),
                    "{raw} with default region {region}"
                );
            }
        }
    }

    /// The input `cargo fuzz` (map_record) found: what parse accepts must read back with
    /// `from_e164` (it did not when `from_e164` read `+61…` with the US national prefix rules).
    #[test]
    fn what_parse_accepts_reads_back_as_e164() {
        for region in [Region::US, Region::AU, Region::GB, Region::CA, Region::NZ] {
            if let Ok(p) = PhoneNumber::parse("0.1.3 345 678", region) {
                assert_eq!(
                    PhoneNumber::from_e164(p.as_str()),
                    Ok(p.clone()),
                    "{region}"
                );
            }
        }
    }

    #[test]
    fn region_matters_for_local_numbers() {
        // An AU mobile read as a US number is not valid.
        assert!(matches!(us("0412 345 678"), Err(PhoneError::Invalid(_))));
    }

    #[test]
    fn rejects_empty_letters_short_and_invalid() {
        assert_eq!(us(""), Err(PhoneError::Empty));
        assert_eq!(us("   "), Err(PhoneError::Empty));
        assert_eq!(
            us("call me maybe"),
            Err(PhoneError::Invalid("no digits".into()))
        );
        assert_eq!(us("12"), Err(PhoneError::Invalid("too short".into())));
        assert!(matches!(us("555-0123"), Err(PhoneError::Invalid(_))));
        assert!(matches!(us("000-000-0000"), Err(PhoneError::Invalid(_))));
        assert!(matches!(us("+999 1234 5678"), Err(PhoneError::Invalid(_))));
        assert!(matches!(
            us("123456789012345678901"),
            Err(PhoneError::Invalid(_))
        ));
    }

    #[test]
    fn invalid_reason_never_repeats_long_input() {
        let raw = format!("{}{}", "4".repeat(10), "z".repeat(500));
        match us(&raw) {
            Err(PhoneError::Invalid(reason)) => assert!(reason.len() < 60, "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn serde_is_the_plain_string_and_deserialize_is_strict() {
        let p = PhoneNumber::parse("(415) 555-0123", Region::US).unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"+14155550123\"");
        let back: PhoneNumber = serde_json::from_str("\"+14155550123\"").unwrap();
        assert_eq!(back, p);
        for bad in [
            "\"(415) 555-0123\"",
            "\"+1 415 555 0123\"",
            "\"14155550123\"",
            "\"\"",
            "\"+10000000000\"",
            "14155550123",
        ] {
            assert!(serde_json::from_str::<PhoneNumber>(bad).is_err(), "{bad}");
        }
        assert_eq!(
            "+61412345678".parse::<PhoneNumber>().unwrap().as_str(),
            "+61412345678"
        );
    }

    #[test]
    fn region_parses_iso_codes_and_displays_upper_case() {
        assert_eq!("US".parse::<Region>(), Ok(Region::US));
        assert_eq!("au".parse::<Region>(), Ok(Region::AU));
        assert_eq!(" GB ".parse::<Region>(), Ok(Region::GB));
        assert_eq!(Region::default(), Region::US);
        assert_eq!(Region::AU.to_string(), "AU");
        assert!("USA".parse::<Region>().is_err());
        assert!("ZZ".parse::<Region>().is_err());
        assert!("".parse::<Region>().is_err());
        assert_eq!(serde_json::to_string(&Region::AU).unwrap(), "\"AU\"");
        assert_eq!(
            serde_json::from_str::<Region>("\"nz\"").unwrap(),
            Region::NZ
        );
    }

    fn forms(e164: &str, region: Region) -> Vec<String> {
        PhoneNumber::from_e164(e164).unwrap().typed_forms(region)
    }

    #[test]
    fn typed_forms_of_an_au_mobile_in_au() {
        assert_eq!(
            forms("+61412345678", Region::AU),
            [
                "+61412345678",
                "0412 345 678",
                "0412345678",
                "+61 412 345 678",
                "61412345678"
            ]
        );
    }

    #[test]
    fn typed_forms_of_an_au_landline_in_au() {
        assert_eq!(
            forms("+61298765432", Region::AU),
            [
                "+61298765432",
                "(02) 9876 5432",
                "0298765432",
                "+61 2 9876 5432",
                "61298765432"
            ]
        );
    }

    #[test]
    fn typed_forms_of_a_us_number_in_the_us() {
        assert_eq!(
            forms("+14155550142", Region::US),
            [
                "+14155550142",
                "(415) 555-0142",
                "4155550142",
                "415-555-0142",
                "+1 415-555-0142",
                "14155550142"
            ]
        );
    }

    /// A number of another country is typed with its country code: its national forms would be
    /// read as another number (or none) in the account's region.
    #[test]
    fn typed_forms_of_a_foreign_number_are_international_only() {
        assert_eq!(
            forms("+14155550142", Region::AU),
            ["+14155550142", "+1 415-555-0142", "14155550142"]
        );
        assert_eq!(
            forms("+61412345678", Region::US),
            ["+61412345678", "+61 412 345 678", "61412345678"]
        );
    }

    /// Every form read in the region (with its `+` where it has one) is the number again.
    #[test]
    fn typed_forms_read_back_as_the_number() {
        for (e164, region) in [
            ("+61412345678", Region::AU),
            ("+61298765432", Region::AU),
            ("+14155550142", Region::US),
            ("+14165550142", Region::CA),
            ("+442079460958", Region::GB),
            ("+6495550142", Region::NZ),
            ("+14155550142", Region::AU),
        ] {
            let p = PhoneNumber::from_e164(e164).unwrap();
            let forms = p.typed_forms(region);
            let mut unique = forms.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), forms.len(), "{forms:?}");
            for f in &forms {
                let as_typed = PhoneNumber::parse(f, region).ok();
                let with_plus = PhoneNumber::parse(&format!("+{f}"), region).ok();
                assert!(
                    as_typed.as_ref() == Some(&p) || with_plus.as_ref() == Some(&p),
                    "{f} in {region}"
                );
            }
        }
    }

    #[test]
    fn number_knows_its_region_and_matches_local_forms() {
        let p = PhoneNumber::parse("0412 345 678", Region::AU).unwrap();
        assert_eq!(p.region(), Some(Region::AU));
        assert!(p.matches("0412345678"));
        assert!(p.matches("+61 412 345 678"));
        assert!(!p.matches("0412 345 679"));
        let us_number = PhoneNumber::parse("+14155550123", Region::AU).unwrap();
        assert_eq!(us_number.region(), Some(Region::US));
        assert!(us_number.matches("(415) 555-0123"));
    }

    /// A small deterministic fuzz: random strings over the characters phone numbers and junk are
    /// made of must never panic and must only ever produce canonical E.164.
    #[test]
    fn parse_never_panics_on_junk() {
        const ALPHABET: &[char] = &[
            '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '+', '+', '(', ')', '-', ' ', '.',
            '#', '*', 'x', 'e', 't', ':', ';', '=', '/', 'a', 'Z', 'é', '０', '١', '\u{200b}',
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let regions = [
            Region::US,
            Region::AU,
            Region::GB,
            "CH".parse().unwrap(),
            "IT".parse().unwrap(),
        ];
        for _ in 0..20_000 {
            let len = (next() % 24) as usize;
            let s: String = (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                .collect();
            let region = regions[(next() % regions.len() as u64) as usize];
            if let Ok(p) = PhoneNumber::parse(&s, region) {
                assert!(p.as_str().starts_with('+'));
                assert_eq!(PhoneNumber::from_e164(p.as_str()).as_ref(), Ok(&p), "{s:?}");
            }
        }
        // Known historical panic inputs of the parser.
        let _ = PhoneNumber::parse("003-836-4618x3001", "CH".parse().unwrap());
        let _ = PhoneNumber::parse("  2 22#:", Region::US);
    }
}
