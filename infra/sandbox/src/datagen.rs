//! Deterministic contact generator. A seeded contact is stored as a 32-byte [`GenRec`]
//! (indexes into name tables plus the phone digits) and expanded into strings only when
//! it is served, so a million contacts take about 64 MB.

use std::borrow::Cow;
use std::fmt;

/// Assigned US area codes (a sample across the country).
const US_AREA_CODES: [u64; 60] = [
    201, 202, 206, 210, 212, 213, 214, 215, 216, 248, 267, 281, 301, 303, 305, 310, 312, 313, 314,
    317, 323, 404, 407, 408, 412, 415, 425, 469, 480, 503, 504, 512, 513, 602, 612, 615, 617, 619,
    626, 646, 650, 702, 704, 713, 718, 720, 732, 773, 786, 801, 813, 818, 832, 858, 908, 913, 916,
    917, 949, 972,
];

use crate::util::SplitMix64;

/// A string that is usually one of the static tables (no allocation) and sometimes owned.
pub(crate) type Text = Cow<'static, str>;

pub(crate) const FIRST_NAMES: &[&str] = &[
    "James",
    "Mary",
    "John",
    "Patricia",
    "Robert",
    "Jennifer",
    "Michael",
    "Linda",
    "William",
    "Elizabeth",
    "David",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Charles",
    "Karen",
    "Christopher",
    "Nancy",
    "Daniel",
    "Lisa",
    "Matthew",
    "Betty",
    "Anthony",
    "Margaret",
    "Mark",
    "Sandra",
    "Donald",
    "Ashley",
    "Steven",
    "Kimberly",
    "Paul",
    "Emily",
    "Andrew",
    "Donna",
    "Joshua",
    "Michelle",
    "Kenneth",
    "Dorothy",
    "Kevin",
    "Carol",
    "Brian",
    "Amanda",
    "George",
    "Melissa",
    "Timothy",
    "Deborah",
    "Ronald",
    "Stephanie",
    "Edward",
    "Rebecca",
    "Jason",
    "Sharon",
    "Jeffrey",
    "Laura",
    "Ryan",
    "Cynthia",
    "Jacob",
    "Kathleen",
    "Gary",
    "Amy",
    "Nicholas",
    "Angela",
    "Eric",
    "Shirley",
    "Jonathan",
    "Anna",
    "Stephen",
    "Brenda",
    "Larry",
    "Pamela",
    "Justin",
    "Emma",
    "Scott",
    "Nicole",
    "Brandon",
    "Helen",
    "Benjamin",
    "Samantha",
    "Samuel",
    "Katherine",
    "Gregory",
    "Christine",
    "Alexander",
    "Debra",
    "Frank",
    "Rachel",
    "Patrick",
    "Carolyn",
    "Raymond",
    "Janet",
    "Jack",
    "Catherine",
    "Dennis",
    "Maria",
    "Jerry",
    "Heather",
    "Tyler",
    "Diane",
    "Aaron",
    "Ruth",
    "José",
    "Julie",
    "Adam",
    "Olivia",
    "Nathan",
    "Joyce",
    "Henry",
    "Virginia",
    "Douglas",
    "Victoria",
    "Zachary",
    "Kelly",
    "Peter",
    "Lauren",
    "Kyle",
    "Christina",
    "Noah",
    "Joan",
    "Ethan",
    "Evelyn",
    "Jeremy",
    "Judith",
    "Walter",
    "Megan",
    "Christian",
    "Andrea",
    "Keith",
    "Cheryl",
    "Roger",
    "Hannah",
    "Terry",
    "Jacqueline",
    "Austin",
    "Martha",
    "Sean",
    "Gloria",
    "Gerald",
    "Teresa",
    "Carl",
    "Ann",
    "Harold",
    "Sara",
    "Dylan",
    "Madison",
    "Arthur",
    "Frances",
    "Lawrence",
    "Kathryn",
    "Jordan",
    "Janice",
    "Jesse",
    "Jean",
    "Bryan",
    "Abigail",
    "Billy",
    "Alice",
    "Bruce",
    "Judy",
    "Gabriel",
    "Sophia",
    "Joe",
    "Grace",
    "Logan",
    "Denise",
    "Alan",
    "Amber",
    "Juan",
    "Doris",
    "Albert",
    "Marilyn",
    "Willie",
    "Danielle",
    "Elijah",
    "Beverly",
    "Wayne",
    "Isabella",
    "Randy",
    "Theresa",
    "Liam",
    "Zoë",
    "Oliver",
    "Chloé",
    "Mia",
    "Siobhan",
    "Ngaio",
    "Aroha",
    "Hamish",
    "Callum",
    "Mei",
    "Priya",
    "Arjun",
    "Wei",
    "Aisha",
    "Mohammed",
    "Fatima",
    "Luca",
    "Giulia",
    "Sören",
    "Anne-Marie",
    "Jean-Luc",
    "Ève",
    "Nguyen",
    "Kai",
    "Ngoc Anh",
];

pub(crate) const LAST_NAMES: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Rivera",
    "Campbell",
    "Mitchell",
    "Carter",
    "Roberts",
    "Gomez",
    "Phillips",
    "Evans",
    "Turner",
    "Diaz",
    "Parker",
    "Cruz",
    "Edwards",
    "Collins",
    "Reyes",
    "Stewart",
    "Morris",
    "Morales",
    "Murphy",
    "Cook",
    "Rogers",
    "Gutierrez",
    "Ortiz",
    "Morgan",
    "Cooper",
    "Peterson",
    "Bailey",
    "Reed",
    "Kelly",
    "Howard",
    "Ramos",
    "Kim",
    "Cox",
    "Ward",
    "Richardson",
    "Watson",
    "Brooks",
    "Chavez",
    "Wood",
    "James",
    "Bennett",
    "Gray",
    "Mendoza",
    "Ruiz",
    "Hughes",
    "Price",
    "Alvarez",
    "Castillo",
    "Sanders",
    "Patel",
    "Myers",
    "Long",
    "Ross",
    "Foster",
    "Jimenez",
    "O'Brien",
    "O'Connor",
    "McDonald",
    "MacKenzie",
    "Smith-Jones",
    "Van der Berg",
    "De la Cruz",
    "Müller",
    "Schröder",
    "Núñez",
    "Björk",
    "Fitzgerald",
    "Nakamura",
    "Tanaka",
    "Wang",
    "Zhang",
    "Chen",
    "Singh",
    "Kaur",
    "Shah",
    "Khan",
    "Ali",
    "Hassan",
    "Okafor",
    "Mensah",
    "Kowalski",
    "Novak",
    "Rossi",
    "Russo",
    "Ferrari",
    "Esposito",
    "Bianchi",
    "Dubois",
    "Lefèvre",
    "Murray",
    "Hughes",
    "Kennedy",
    "Walsh",
    "Byrne",
    "Ryan",
    "O'Sullivan",
    "Doherty",
    "Campbell",
    "Stewart",
    "Macdonald",
    "Robertson",
    "Thomson",
    "Fraser",
    "Davies",
    "Jenkins",
    "Lloyd",
    "Price",
    "Thompson",
    "Nicholls",
    "Pemberton-Smythe",
    "Wolfeschlegelsteinhausen",
];

pub(crate) const STAGES: &[&str] = &[
    "Lead",
    "Prospect",
    "Active Client",
    "Under Contract",
    "Closed",
    "Past Client",
    "Sphere",
    "Nurture",
];

pub(crate) const SOURCES: &[&str] = &[
    "Zillow",
    "Realtor.com",
    "Website",
    "Open House",
    "Referral",
    "Facebook Ads",
    "Google Ads",
    "Import",
    "Sign Call",
    "Homes.com",
];

pub(crate) const TAGS: &[&str] = &[
    "Buyer",
    "Seller",
    "Investor",
    "Hot Lead",
    "Newsletter",
    "First Home",
    "Relocation",
    "VIP",
];

/// Personal email domains: 0..7 US, 7..10 AU, 10..14 GB.
const DOMAINS: &[&str] = &[
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "hotmail.com",
    "icloud.com",
    "aol.com",
    "comcast.net",
    "bigpond.com",
    "optusnet.com.au",
    "gmail.com",
    "btinternet.com",
    "sky.com",
    "hotmail.co.uk",
    "gmail.com",
];

const WORK_DOMAINS: &[&str] = &[
    "summitrealty.com",
    "keystonehomes.com",
    "harbourrealty.com.au",
    "bluegumproperty.com.au",
    "thamesestates.co.uk",
    "northpointcapital.com",
];

/// Phone kinds.
pub(crate) const PH_NONE: u8 = 0;
pub(crate) const PH_US: u8 = 1;
pub(crate) const PH_AU_MOBILE: u8 = 2;
pub(crate) const PH_AU_LAND: u8 = 3;
pub(crate) const PH_GB_MOBILE: u8 = 4;
pub(crate) const PH_GB_LAND: u8 = 5;
pub(crate) const PH_INVALID: u8 = 6;

fn format_count(kind: u8) -> u64 {
    match kind {
        PH_US => 8,
        PH_AU_MOBILE => 5,
        PH_AU_LAND => 4,
        PH_GB_MOBILE => 5,
        PH_GB_LAND => 3,
        PH_INVALID => 6,
        _ => 1,
    }
}

/// Email flags.
const EM_STYLE_MASK: u8 = 0b0000_0111;
const EM_CAPITALIZED: u8 = 0b0000_1000;
const EM_MISSING: u8 = 0b0001_0000;
const EM_WORK: u8 = 0b0010_0000;

/// A seeded contact in 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GenRec {
    /// National significant number of the phone (digits as an integer).
    pub nsn: u64,
    /// Unique number used in the email local part.
    pub ordinal: u32,
    /// Phone extension (0 = none).
    pub ext: u16,
    pub first: u16,
    pub last: u16,
    pub phone_kind: u8,
    pub phone_fmt: u8,
    pub email: u8,
    pub domain: u8,
    pub stage: u8,
    pub source: u8,
    pub tags: u8,
}

/// One email or phone with its label (`home`, `work`, `mobile`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Point {
    pub value: String,
    pub label: Text,
}

impl Point {
    pub(crate) fn new(value: impl Into<String>, label: impl Into<Text>) -> Self {
        Point {
            value: value.into(),
            label: label.into(),
        }
    }
}

/// A contact with owned strings: every record created or modified through an API, and
/// the expanded form of a [`GenRec`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct FullRec {
    pub first: Text,
    pub last: Text,
    pub emails: Vec<Point>,
    pub phones: Vec<Point>,
    pub tags: Vec<Text>,
    pub stage: Text,
    pub source: Text,
    pub background: Option<String>,
    /// REX `type` (`person` / `company`).
    pub kind: Text,
    /// Lofty: when the tag list was last set (ms; 0 = when the record was created). Tags
    /// carry their own `createTime`/`updateTime` (crm-apis §2.2); the lead has none.
    pub tags_at: i64,
}

/// `first last` (either may be empty), serialized without an intermediate `String`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FullName<'a>(pub &'a str, pub &'a str);

impl fmt::Display for FullName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0.is_empty(), self.1.is_empty()) {
            (false, false) => write!(f, "{} {}", self.0, self.1),
            (false, true) => f.write_str(self.0),
            (true, false) => f.write_str(self.1),
            (true, true) => Ok(()),
        }
    }
}

impl serde::Serialize for FullName<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FullRec {
    pub(crate) fn name(&self) -> String {
        self.full_name().to_string()
    }

    pub(crate) fn full_name(&self) -> FullName<'_> {
        FullName(&self.first, &self.last)
    }

    pub(crate) fn primary_email(&self) -> Option<&str> {
        self.emails.first().map(|p| p.value.as_str())
    }

    pub(crate) fn primary_phone(&self) -> Option<&str> {
        self.phones.first().map(|p| p.value.as_str())
    }
}

fn fold_char(c: char) -> Option<char> {
    match c {
        'a'..='z' | '0'..='9' => Some(c),
        'A'..='Z' => Some(c.to_ascii_lowercase()),
        'à' | 'á' | 'â' | 'ä' | 'å' => Some('a'),
        'è' | 'é' | 'ê' | 'ë' | 'È' | 'É' | 'Ê' | 'Ë' => Some('e'),
        'ì' | 'í' | 'î' | 'ï' => Some('i'),
        'ò' | 'ó' | 'ô' | 'ö' | 'ø' => Some('o'),
        'ù' | 'ú' | 'û' | 'ü' => Some('u'),
        'ñ' => Some('n'),
        'ç' => Some('c'),
        _ => None,
    }
}

/// Appends the ASCII-folded name (`fallback` when nothing is left), capitalized if asked.
fn push_folded(out: &mut String, name: &str, cap: bool, fallback: &str, max: usize) {
    let start = out.len();
    for c in name.chars().filter_map(fold_char) {
        if out.len() - start >= max {
            break;
        }
        if cap && out.len() == start {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c);
        }
    }
    if out.len() == start {
        out.push_str(fallback);
    }
}

fn push_num(out: &mut String, n: u32) {
    let mut buf = [0u8; 10];
    let mut i = buf.len();
    let mut v = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for b in &buf[i..] {
        out.push(char::from(*b));
    }
}

impl GenRec {
    pub(crate) fn first_name(&self) -> &'static str {
        FIRST_NAMES
            .get(self.first as usize)
            .copied()
            .unwrap_or("Alex")
    }

    pub(crate) fn last_name(&self) -> &'static str {
        LAST_NAMES.get(self.last as usize).copied().unwrap_or("Doe")
    }

    /// `local@domain`, built in one buffer.
    fn email(&self, style: u8, cap: bool, domain: &str) -> String {
        let (f, l) = (self.first_name(), self.last_name());
        let mut s = String::with_capacity(48);
        let n = self.ordinal;
        match style {
            0 => {
                push_folded(&mut s, f, cap, "contact", 64);
                s.push('.');
                push_folded(&mut s, l, cap, "x", 64);
                push_num(&mut s, n);
            }
            1 => {
                push_folded(&mut s, f, cap, "contact", 64);
                push_folded(&mut s, l, cap, "x", 64);
                push_num(&mut s, n);
            }
            2 => {
                push_folded(&mut s, f, cap, "c", 1);
                s.push('.');
                push_folded(&mut s, l, cap, "x", 64);
                push_num(&mut s, n);
            }
            3 => {
                push_folded(&mut s, f, cap, "contact", 64);
                push_num(&mut s, n);
            }
            4 => {
                push_folded(&mut s, l, cap, "x", 64);
                s.push('.');
                push_folded(&mut s, f, cap, "contact", 64);
                push_num(&mut s, n);
            }
            _ => {
                push_folded(&mut s, f, cap, "contact", 64);
                s.push('.');
                push_folded(&mut s, l, cap, "x", 64);
                s.push('.');
                push_num(&mut s, n);
            }
        }
        s.push('@');
        if cap {
            let mut chars = domain.chars();
            if let Some(c) = chars.next() {
                s.push(c.to_ascii_uppercase());
            }
            s.push_str(chars.as_str());
        } else {
            s.push_str(domain);
        }
        s
    }

    pub(crate) fn emails(&self) -> Vec<Point> {
        if self.email & EM_MISSING != 0 {
            return Vec::new();
        }
        let cap = self.email & EM_CAPITALIZED != 0;
        let style = self.email & EM_STYLE_MASK;
        let domain = DOMAINS
            .get(self.domain as usize)
            .copied()
            .unwrap_or("gmail.com");
        let work = self.email & EM_WORK != 0;
        let mut v = Vec::with_capacity(if work { 2 } else { 1 });
        v.push(Point::new(self.email(style, cap, domain), "home"));
        if work {
            let wd = WORK_DOMAINS[self.domain as usize % WORK_DOMAINS.len()];
            v.push(Point::new(self.email(0, false, wd), "work"));
        }
        v
    }

    pub(crate) fn phone(&self) -> Option<String> {
        let n = self.nsn;
        let (len, template) = match self.phone_kind {
            PH_US => (
                10,
                match self.phone_fmt {
                    0 => "+1DDDDDDDDDD",
                    1 => "(DDD) DDD-DDDD",
                    2 => "DDD-DDD-DDDD",
                    3 => "DDD.DDD.DDDD",
                    4 => "DDDDDDDDDD",
                    5 => "+1 DDD-DDD-DDDD",
                    6 => "1-DDD-DDD-DDDD",
                    _ => "+1 (DDD) DDD-DDDD",
                },
            ),
            PH_AU_MOBILE => (
                9,
                match self.phone_fmt {
                    0 => "+61DDDDDDDDD",
                    1 => "+61 DDD DDD DDD",
                    2 => "0DDD DDD DDD",
                    3 => "0DDDDDDDDD",
                    _ => "(+61) DDD DDD DDD",
                },
            ),
            PH_AU_LAND => (
                9,
                match self.phone_fmt {
                    0 => "+61 D DDDD DDDD",
                    1 => "(0D) DDDD DDDD",
                    2 => "0D DDDDDDDD",
                    _ => "+61DDDDDDDDD",
                },
            ),
            PH_GB_MOBILE => (
                10,
                match self.phone_fmt {
                    0 => "+44 DDDD DDDDDD",
                    1 => "0DDDD DDDDDD",
                    2 => "+44DDDDDDDDDD",
                    3 => "0DDDDDDDDDD",
                    _ => "+44 (0)DDDD DDDDDD",
                },
            ),
            PH_GB_LAND => (
                10,
                match self.phone_fmt {
                    0 => "+44 DD DDDD DDDD",
                    1 => "0DD DDDD DDDD",
                    _ => "+44DDDDDDDDDD",
                },
            ),
            PH_INVALID => {
                return Some(match self.phone_fmt {
                    0 => format!("{:05}", n % 100_000),
                    1 => "N/A".to_string(),
                    2 => format!("+1 (555) 0{}", n % 10),
                    3 => "tbd".to_string(),
                    4 => format!("{:03}-{:02}", n % 1000, n % 100),
                    _ => "000".to_string(),
                });
            }
            _ => return None,
        };
        // The NSN's digits, most significant first, fill the `D`s of the template.
        let mut digits = [b'0'; 16];
        let mut v = n;
        for k in (0..len).rev() {
            digits[k] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        let mut out = String::with_capacity(template.len() + 12);
        let mut k = 0;
        for c in template.chars() {
            if c == 'D' {
                out.push(char::from(digits[k]));
                k += 1;
            } else {
                out.push(c);
            }
        }
        if self.phone_kind == PH_US && self.ext > 0 {
            out.push_str(match self.ext % 3 {
                0 => " x",
                1 => " ext. ",
                _ => " ext ",
            });
            push_num(&mut out, u32::from(self.ext));
        }
        Some(out)
    }

    fn phone_label(&self) -> &'static str {
        match self.phone_kind {
            PH_AU_LAND | PH_GB_LAND => "home",
            _ if self.ext > 0 => "work",
            _ => "mobile",
        }
    }

    pub(crate) fn tags(&self) -> Vec<Text> {
        if self.tags == 0 {
            return Vec::new();
        }
        TAGS.iter()
            .enumerate()
            .filter(|(i, _)| self.tags & (1 << i) != 0)
            .map(|(_, t)| Cow::Borrowed(*t))
            .collect()
    }

    pub(crate) fn expand(&self) -> FullRec {
        FullRec {
            first: Cow::Borrowed(self.first_name()),
            last: Cow::Borrowed(self.last_name()),
            emails: self.emails(),
            phones: self
                .phone()
                .map(|p| vec![Point::new(p, self.phone_label())])
                .unwrap_or_default(),
            tags: self.tags(),
            stage: Cow::Borrowed(STAGES.get(self.stage as usize).copied().unwrap_or("Lead")),
            source: Cow::Borrowed(
                SOURCES
                    .get(self.source as usize)
                    .copied()
                    .unwrap_or("Import"),
            ),
            background: None,
            kind: Cow::Borrowed("person"),
            tags_at: 0,
        }
    }
}

/// 2026-01-01T00:00:00Z: default end of the seeded update-time range, fixed so that the
/// same seed always gives the same data.
pub const DEFAULT_SEED_END_MS: i64 = 1_767_225_600_000;

const DAY_MS: i64 = 86_400_000;

/// One generated contact before it gets an id.
pub(crate) struct Generated {
    pub rec: GenRec,
    pub created: i64,
    pub updated: i64,
}

/// Generates `count` contacts. `ordinal_base` makes the email local parts unique across
/// several seedings of the same store. Updates spread over the 365 days before `end_ms`,
/// creations over the 730 days before it (monotone in order), with ~8% of the updates on
/// twelve shared "bulk import" timestamps.
pub(crate) fn generate(seed: u64, count: usize, ordinal_base: u32, end_ms: i64) -> Vec<Generated> {
    let mut rng = SplitMix64::new(seed);
    let mut out: Vec<Generated> = Vec::with_capacity(count);
    let created_start = end_ms - 730 * DAY_MS;
    let created_span = 700 * DAY_MS; // the last ~30 days only get updates
    let update_start = end_ms - 365 * DAY_MS;
    for i in 0..count {
        let first = rng.below(FIRST_NAMES.len() as u64) as u16;
        let last = rng.below(LAST_NAMES.len() as u64) as u16;
        let country = rng.below(100);
        let mut rec = GenRec {
            nsn: 0,
            ordinal: ordinal_base.wrapping_add(i as u32),
            ext: 0,
            first,
            last,
            phone_kind: PH_NONE,
            phone_fmt: 0,
            email: 0,
            domain: 0,
            stage: rng.below(STAGES.len() as u64) as u8,
            source: rng.below(SOURCES.len() as u64) as u8,
            tags: 0,
        };
        for bit in 0..TAGS.len() {
            if rng.chance(0.15) {
                rec.tags |= 1 << bit;
            }
        }
        // Phone: 3% missing, 2% invalid, 5% duplicate of an earlier contact, else fresh.
        let p = rng.below(1000);
        if p < 30 {
            rec.phone_kind = PH_NONE;
        } else if p < 50 {
            rec.phone_kind = PH_INVALID;
            rec.phone_fmt = rng.below(format_count(PH_INVALID)) as u8;
            rec.nsn = rng.below(100_000);
        } else {
            let dup_of = if p < 100 && i > 0 {
                let j = rng.below(i as u64) as usize;
                let other = out[j].rec;
                matches!(other.phone_kind, PH_US..=PH_GB_LAND).then_some(other)
            } else {
                None
            };
            match dup_of {
                Some(other) => {
                    rec.phone_kind = other.phone_kind;
                    rec.nsn = other.nsn;
                    // Half keep the same spelling, half use another format of the number.
                    rec.phone_fmt = if rng.chance(0.5) {
                        other.phone_fmt
                    } else {
                        rng.below(format_count(other.phone_kind)) as u8
                    };
                }
                None => {
                    // Real numbering plans: an assigned US area code and an exchange 2xx-9xx; AU
                    // mobiles 04xx, AU landlines with a valid second digit per area (02 9, 03 9,
                    // 07 3, 08 8); GB mobiles 07[45789], London landlines 020 [378]. Random digits
                    // elsewhere make most numbers invalid, which real CRM data is not.
                    let (kind, nsn) = if country < 80 {
                        let area = US_AREA_CODES[rng.below(US_AREA_CODES.len() as u64) as usize];
                        let exch = 200 + rng.below(800);
                        let line = rng.below(10_000);
                        (PH_US, area * 10_000_000 + exch * 10_000 + line)
                    } else if country < 90 {
                        if rng.chance(0.7) {
                            (PH_AU_MOBILE, 400_000_000 + rng.below(100_000_000))
                        } else {
                            let (d, second) =
                                [(2u64, 9u64), (3, 9), (7, 3), (8, 8)][rng.below(4) as usize];
                            (
                                PH_AU_LAND,
                                d * 100_000_000 + second * 10_000_000 + rng.below(10_000_000),
                            )
                        }
                    } else if rng.chance(0.75) {
                        let second = [4u64, 5, 7, 8, 9][rng.below(5) as usize];
                        (
                            PH_GB_MOBILE,
                            7_000_000_000 + second * 100_000_000 + rng.below(100_000_000),
                        )
                    } else {
                        let third = [3u64, 7, 8][rng.below(3) as usize];
                        (
                            PH_GB_LAND,
                            2_000_000_000 + third * 10_000_000 + rng.below(10_000_000),
                        )
                    };
                    rec.phone_kind = kind;
                    rec.nsn = nsn;
                    rec.phone_fmt = rng.below(format_count(kind)) as u8;
                    if kind == PH_US && rng.chance(0.04) {
                        rec.ext = 1 + rng.below(9_999) as u16;
                    }
                }
            }
        }
        // Email: 1% missing, 5% mixed case, 10% with a second (work) address.
        let style = rng.below(6) as u8;
        let mut em = style;
        if rng.chance(0.01) {
            em |= EM_MISSING;
        }
        if rng.chance(0.05) {
            em |= EM_CAPITALIZED;
        }
        if rng.chance(0.10) {
            em |= EM_WORK;
        }
        rec.email = em;
        rec.domain = if country < 80 {
            rng.below(7) as u8
        } else if country < 90 {
            7 + rng.below(3) as u8
        } else {
            10 + rng.below(4) as u8
        };
        // Times.
        let created =
            created_start + ((i as i128 * created_span as i128) / count.max(1) as i128) as i64;
        let updated = if rng.chance(0.08) {
            let k = rng.below(12) as i64;
            let bulk = update_start + k * 30 * DAY_MS + 3 * 3_600_000;
            bulk.max(created)
        } else {
            let lo = created.max(update_start);
            lo + rng.below((end_ms - lo).max(0) as u64 + 1) as i64
        };
        out.push(Generated {
            rec,
            created,
            updated,
        });
    }
    out
}
