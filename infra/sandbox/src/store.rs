//! In-memory contact store of one CRM.
//!
//! Records live in a `Vec` sorted by id (ids only grow), so an id lookup is a binary
//! search. A second `Vec<u32>` of positions is kept sorted by `(updated, id)`; it is
//! maintained incrementally on single writes (binary search + memmove) and rebuilt lazily
//! after bulk writes, so every page costs O(log n + page). Creation order equals id order
//! unless a record was created with an explicit past `created` time; only then is a
//! `(created, id)` index built. Phone and email indexes are hash maps built lazily on the
//! first filtered query and maintained afterwards.
//!
//! Records are never removed (positions are stable): a deleted record changes its
//! [`RecordState`]. The few records that are not `Active` sit in a side map, so a seeded
//! record stays 64 bytes. Lists skip them with rank arithmetic on a sorted vector of their
//! keys, so a page still costs O(log n · log h + page) for h hidden records.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::datagen::{FullRec, GenRec, Generated};
use crate::util::{SplitMix64, fnv1a, now_ms};

/// Where a record stands. Every record is `Active` until a CRM route or the control API
/// moves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    /// Listed and searchable.
    Active,
    /// Lofty: created, not yet persisted (`visibility_lag_ms`, crm-apis §2.2 "persistence
    /// is asynchronous"). Hidden from lists, searches and `GET` by id; writes still work.
    Pending,
    /// REX: archived (`search_state=archive`, crm-apis §3.4).
    Archived,
    /// FUB stage `Trash` (§1.3), REX `search_state=trash` (§3.4), Lofty's trash after a
    /// `DELETE` (§2.2).
    Trashed,
}

impl RecordState {
    pub fn name(self) -> &'static str {
        match self {
            RecordState::Active => "active",
            RecordState::Pending => "pending",
            RecordState::Archived => "archived",
            RecordState::Trashed => "trashed",
        }
    }

    /// Archived and trashed records are out of the CRM's default views.
    pub fn is_removed(self) -> bool {
        matches!(self, RecordState::Archived | RecordState::Trashed)
    }
}

/// Which records a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateFilter {
    /// `Active` records only (every CRM's default view).
    Listed,
    /// Every record (FUB `includeTrash=true`, the control API).
    Any,
    /// Only records in this state (REX `search_state=archive|trash`).
    Only(RecordState),
}

pub(crate) enum RecData {
    Gen(GenRec),
    Full(Box<FullRec>),
}

pub(crate) struct Rec {
    pub id: u64,
    pub created: i64,
    pub updated: i64,
    pub data: RecData,
}

impl Rec {
    pub(crate) fn full(&self) -> Cow<'_, FullRec> {
        match &self.data {
            RecData::Gen(g) => Cow::Owned(g.expand()),
            RecData::Full(f) => Cow::Borrowed(f),
        }
    }

    fn phones_for_index(&self) -> Vec<String> {
        match &self.data {
            RecData::Gen(g) => g.phone().into_iter().collect(),
            RecData::Full(f) => f.phones.iter().map(|p| p.value.clone()).collect(),
        }
    }

    fn emails_for_index(&self) -> Vec<String> {
        match &self.data {
            RecData::Gen(g) => g.emails().into_iter().map(|p| p.value).collect(),
            RecData::Full(f) => f.emails.iter().map(|p| p.value.clone()).collect(),
        }
    }

    pub(crate) fn has_phone_key(&self, key: u64) -> bool {
        self.phones_for_index()
            .iter()
            .any(|p| phone_key(p) == Some(key))
    }

    pub(crate) fn has_phone_exact(&self, lower: &str) -> bool {
        self.phones_for_index()
            .iter()
            .any(|p| p.trim().to_lowercase() == lower)
    }

    pub(crate) fn has_email(&self, email_lower: &str) -> bool {
        self.emails_for_index()
            .iter()
            .any(|e| e.trim().to_lowercase() == email_lower)
    }
}

/// Normalized phone key: the national significant number (punctuation, country code
/// +1/+61/+44, trunk prefix `0` and extensions ignored), packed with its length. `None`
/// for anything with fewer than 7 or more than 15 digits.
pub(crate) fn phone_key(raw: &str) -> Option<u64> {
    let lower = raw.to_ascii_lowercase();
    let mut cut = lower.len();
    for marker in ["x", "#", ";", ",", "ext"] {
        if let Some(i) = lower.find(marker) {
            cut = cut.min(i);
        }
    }
    let main = &lower[..cut];
    let plus = main.chars().find(|c| c.is_ascii_digit() || *c == '+') == Some('+');
    let mut digits: Vec<u8> = main
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    let mut intl = plus;
    if !intl && digits.len() > 9 && digits.starts_with(&[0, 0]) {
        digits.drain(..2);
        intl = true;
    }
    let nsn: &[u8] = if intl {
        if digits.starts_with(&[1]) {
            &digits[1..]
        } else if digits.starts_with(&[6, 1]) || digits.starts_with(&[4, 4]) {
            let rest = &digits[2..];
            rest.strip_prefix(&[0]).unwrap_or(rest)
        } else {
            &digits[..]
        }
    } else if (digits.len() == 11 && digits[0] == 1) || digits.first() == Some(&0) {
        // US national with the leading 1, or a trunk prefix 0 (AU, GB).
        &digits[1..]
    } else {
        &digits[..]
    };
    if nsn.len() < 7 || nsn.len() > 15 {
        return None;
    }
    let value = nsn.iter().fold(0u64, |acc, d| acc * 10 + *d as u64);
    Some(((nsn.len() as u64) << 56) | value)
}

/// Exact phone key: the string as stored, trimmed, case folded (REX and Lofty compare the
/// stored string, crm-apis §4). `None` for an empty string.
pub(crate) fn phone_exact_key(raw: &str) -> Option<u64> {
    let t = raw.trim();
    (!t.is_empty()).then(|| fnv1a(t.to_lowercase().bytes()))
}

pub(crate) fn email_key(raw: &str) -> u64 {
    fnv1a(raw.trim().to_lowercase().bytes())
}

enum Slot {
    One(u32),
    Many(Vec<u32>),
}

fn slot_add(map: &mut HashMap<u64, Slot>, key: u64, pos: u32) {
    match map.get_mut(&key) {
        None => {
            map.insert(key, Slot::One(pos));
        }
        Some(Slot::One(p)) => {
            if *p != pos {
                let v = vec![*p, pos];
                map.insert(key, Slot::Many(v));
            }
        }
        Some(Slot::Many(v)) => {
            if !v.contains(&pos) {
                v.push(pos);
            }
        }
    }
}

fn slot_remove(map: &mut HashMap<u64, Slot>, key: u64, pos: u32) {
    let remove = match map.get_mut(&key) {
        None => false,
        Some(Slot::One(p)) => *p == pos,
        Some(Slot::Many(v)) => {
            v.retain(|p| *p != pos);
            v.is_empty()
        }
    };
    if remove {
        map.remove(&key);
    }
}

fn slot_positions(map: &HashMap<u64, Slot>, key: u64) -> Vec<u32> {
    match map.get(&key) {
        None => Vec::new(),
        Some(Slot::One(p)) => vec![*p],
        Some(Slot::Many(v)) => v.clone(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SortField {
    Id,
    Created,
    Updated,
}

impl SortField {
    fn index(self) -> usize {
        match self {
            SortField::Id => 0,
            SortField::Created => 1,
            SortField::Updated => 2,
        }
    }
}

/// A keyset position: the last item of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub time: i64,
    pub id: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct ListQuery {
    pub sort: SortField,
    pub desc: bool,
    /// Restrict to these positions (from a phone/email/id lookup).
    pub candidates: Option<Vec<u32>>,
    /// `(bound, inclusive)` on the update time.
    pub updated_min: Option<(i64, bool)>,
    pub updated_max: Option<(i64, bool)>,
    pub after: Option<Cursor>,
    pub offset: usize,
    pub limit: usize,
    pub filter: StateFilter,
}

impl ListQuery {
    pub(crate) fn new(sort: SortField, desc: bool, limit: usize) -> Self {
        ListQuery {
            filter: StateFilter::Listed,
            sort,
            desc,
            candidates: None,
            updated_min: None,
            updated_max: None,
            after: None,
            offset: 0,
            limit,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct PageResult {
    /// Positions of the page, in the requested order.
    pub items: Vec<u32>,
    /// Number of records matching the filters.
    pub total: usize,
    /// Rank of the first item among the matching records, in the requested order.
    pub rank: usize,
    /// More matching records follow this page.
    pub more: bool,
}

enum View<'a> {
    Slice(&'a [u32]),
    Identity(usize),
    Owned(Vec<u32>),
}

impl View<'_> {
    fn len(&self) -> usize {
        match self {
            View::Slice(s) => s.len(),
            View::Identity(n) => *n,
            View::Owned(v) => v.len(),
        }
    }

    fn get(&self, i: usize) -> u32 {
        match self {
            View::Slice(s) => s[i],
            View::Identity(_) => i as u32,
            View::Owned(v) => v[i],
        }
    }
}

/// First index in `0..n` for which `pred` is false (pred must be monotone true→false).
fn partition(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// How ids are handed out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdScheme {
    pub base: u64,
    /// Ids grow by `1..=max_step` (random, seeded).
    pub max_step: u64,
    pub salt: u64,
}

pub(crate) struct Store {
    /// Time resolution of the CRM (REX and FUB: seconds; Lofty: milliseconds).
    pub res_ms: i64,
    ids: IdScheme,
    recs: Vec<Rec>,
    by_updated: Vec<u32>,
    updated_dirty: bool,
    by_created: Vec<u32>,
    created_dirty: bool,
    created_monotone: bool,
    phone_idx: Option<HashMap<u64, Slot>>,
    phone_exact_idx: Option<HashMap<u64, Slot>>,
    email_idx: Option<HashMap<u64, Slot>>,
    /// Records that are not `Active` (few), by position.
    states: HashMap<u32, RecordState>,
    /// How many of them are archived or trashed.
    removed: usize,
    /// `Pending` records and when they become `Active`.
    pending: Vec<(i64, u32)>,
    /// Keys of every non-`Active` record per sort (`SortField::index`), sorted; built lazily.
    hidden_keys: [Option<Vec<(i64, u64)>>; 3],
    next_id: u64,
    id_rng: SplitMix64,
    ordinal: u32,
    /// What happened to records since the webhook deliverer last looked (`crate::webhooks`):
    /// kept only while the provider has a webhook subscribed.
    journal: Option<Vec<Change>>,
}

/// What happened to a record, as a CRM's webhooks tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Created,
    Updated,
    /// Archived or trashed.
    Removed,
    /// Out of the archive or the trash.
    Restored,
    /// Moved to another stage (FUB), other than into or out of the trash.
    Stage,
}

/// One change of one record, for webhook deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Change {
    pub id: u64,
    pub kind: ChangeKind,
}

impl Store {
    pub(crate) fn new(res_ms: i64, ids: IdScheme) -> Self {
        Store {
            res_ms,
            ids,
            recs: Vec::new(),
            by_updated: Vec::new(),
            updated_dirty: false,
            by_created: Vec::new(),
            created_dirty: false,
            created_monotone: true,
            phone_idx: None,
            phone_exact_idx: None,
            email_idx: None,
            states: HashMap::new(),
            removed: 0,
            pending: Vec::new(),
            hidden_keys: [None, None, None],
            next_id: ids.base,
            id_rng: SplitMix64::new(ids.salt),
            ordinal: 0,
            journal: None,
        }
    }

    pub(crate) fn clear(&mut self) {
        let watched = self.journal.is_some();
        *self = Store::new(self.res_ms, self.ids);
        self.watch(watched);
    }

    /// Starts (or stops) keeping the changes a webhook deliverer takes with [`Store::take_changes`].
    pub(crate) fn watch(&mut self, on: bool) {
        match (on, &self.journal) {
            (true, None) => self.journal = Some(Vec::new()),
            (false, Some(_)) => self.journal = None,
            _ => {}
        }
    }

    /// The changes since the last call, oldest first.
    pub(crate) fn take_changes(&mut self) -> Vec<Change> {
        self.journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    fn note(&mut self, pos: u32, kind: ChangeKind) {
        if let Some(journal) = &mut self.journal {
            journal.push(Change {
                id: self.recs[pos as usize].id,
                kind,
            });
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.recs.len()
    }

    /// Records that are neither archived nor trashed (pending ones included).
    pub(crate) fn live_len(&self) -> usize {
        self.recs.len() - self.removed
    }

    pub(crate) fn state_of(&self, pos: u32) -> RecordState {
        self.states
            .get(&pos)
            .copied()
            .unwrap_or(RecordState::Active)
    }

    /// Moves a record to `state` (`Pending` goes through [`Store::mark_pending`]).
    pub(crate) fn set_state(&mut self, pos: u32, state: RecordState) {
        let old = self.state_of(pos);
        if old == state {
            return;
        }
        if state.is_removed() && !old.is_removed() {
            self.note(pos, ChangeKind::Removed);
        } else if old.is_removed() && !state.is_removed() {
            self.note(pos, ChangeKind::Restored);
        }
        if old.is_removed() {
            self.removed -= 1;
        }
        if state.is_removed() {
            self.removed += 1;
        }
        if old == RecordState::Pending {
            self.pending.retain(|(_, p)| *p != pos);
        }
        if state == RecordState::Active {
            self.states.remove(&pos);
        } else {
            self.states.insert(pos, state);
        }
        self.invalidate_hidden();
    }

    /// The record stays hidden until `visible_at` (ms).
    pub(crate) fn mark_pending(&mut self, pos: u32, visible_at: i64) {
        self.set_state(pos, RecordState::Pending);
        self.pending.push((visible_at, pos));
    }

    /// Pending records whose time has come become `Active`.
    pub(crate) fn promote_pending(&mut self, now: i64) {
        if self.pending.is_empty() {
            return;
        }
        let states = &mut self.states;
        let mut changed = false;
        self.pending.retain(|(at, pos)| {
            if *at <= now {
                states.remove(pos);
                changed = true;
                false
            } else {
                true
            }
        });
        if changed {
            self.invalidate_hidden();
        }
    }

    fn invalidate_hidden(&mut self) {
        self.hidden_keys = [None, None, None];
    }

    /// Sorted keys of every non-`Active` record in the `sort` order.
    fn ensure_hidden_keys(&mut self, sort: SortField) {
        if self.hidden_keys[sort.index()].is_some() {
            return;
        }
        let mut v: Vec<(i64, u64)> = self.states.keys().map(|p| self.key(*p, sort)).collect();
        v.sort_unstable();
        self.hidden_keys[sort.index()] = Some(v);
    }

    pub(crate) fn trunc(&self, ms: i64) -> i64 {
        ms - ms.rem_euclid(self.res_ms.max(1))
    }

    pub(crate) fn rec(&self, pos: u32) -> &Rec {
        &self.recs[pos as usize]
    }

    pub(crate) fn recs(&self) -> &[Rec] {
        &self.recs
    }

    pub(crate) fn pos_of(&self, id: u64) -> Option<u32> {
        self.recs
            .binary_search_by_key(&id, |r| r.id)
            .ok()
            .map(|p| p as u32)
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        let step = if self.ids.max_step > 1 {
            1 + self.id_rng.below(self.ids.max_step)
        } else {
            1
        };
        self.next_id = self.next_id.saturating_add(step);
        id
    }

    fn key(&self, pos: u32, sort: SortField) -> (i64, u64) {
        let r = &self.recs[pos as usize];
        match sort {
            SortField::Id => (0, r.id),
            SortField::Created => (r.created, r.id),
            SortField::Updated => (r.updated, r.id),
        }
    }

    fn ensure_sorted(&mut self, sort: SortField) {
        match sort {
            SortField::Updated if self.updated_dirty => {
                let mut v: Vec<u32> = (0..self.recs.len() as u32).collect();
                let recs = &self.recs;
                v.sort_unstable_by_key(|p| {
                    let r = &recs[*p as usize];
                    (r.updated, r.id)
                });
                self.by_updated = v;
                self.updated_dirty = false;
            }
            SortField::Created if !self.created_monotone && self.created_dirty => {
                let mut v: Vec<u32> = (0..self.recs.len() as u32).collect();
                let recs = &self.recs;
                v.sort_unstable_by_key(|p| {
                    let r = &recs[*p as usize];
                    (r.created, r.id)
                });
                self.by_created = v;
                self.created_dirty = false;
            }
            _ => {}
        }
    }

    fn index_insert_updated(&mut self, pos: u32) {
        if self.updated_dirty {
            return;
        }
        let k = self.key(pos, SortField::Updated);
        let at = partition(self.by_updated.len(), |i| {
            self.key(self.by_updated[i], SortField::Updated) < k
        });
        self.by_updated.insert(at, pos);
    }

    fn index_remove_updated(&mut self, pos: u32) {
        if self.updated_dirty {
            return;
        }
        let k = self.key(pos, SortField::Updated);
        let at = partition(self.by_updated.len(), |i| {
            self.key(self.by_updated[i], SortField::Updated) < k
        });
        if self.by_updated.get(at) == Some(&pos) {
            self.by_updated.remove(at);
        } else {
            self.updated_dirty = true;
        }
    }

    fn hash_indexes_add(&mut self, pos: u32) {
        if self.phone_idx.is_none() && self.phone_exact_idx.is_none() && self.email_idx.is_none() {
            return;
        }
        let rec = &self.recs[pos as usize];
        let phones = rec.phones_for_index();
        let emails = rec.emails_for_index();
        if let Some(idx) = self.phone_idx.as_mut() {
            for p in &phones {
                if let Some(k) = phone_key(p) {
                    slot_add(idx, k, pos);
                }
            }
        }
        if let Some(idx) = self.phone_exact_idx.as_mut() {
            for p in &phones {
                if let Some(k) = phone_exact_key(p) {
                    slot_add(idx, k, pos);
                }
            }
        }
        if let Some(idx) = self.email_idx.as_mut() {
            for e in &emails {
                slot_add(idx, email_key(e), pos);
            }
        }
    }

    fn hash_indexes_remove(&mut self, pos: u32) {
        if self.phone_idx.is_none() && self.phone_exact_idx.is_none() && self.email_idx.is_none() {
            return;
        }
        let rec = &self.recs[pos as usize];
        let phones = rec.phones_for_index();
        let emails = rec.emails_for_index();
        if let Some(idx) = self.phone_idx.as_mut() {
            for p in &phones {
                if let Some(k) = phone_key(p) {
                    slot_remove(idx, k, pos);
                }
            }
        }
        if let Some(idx) = self.phone_exact_idx.as_mut() {
            for p in &phones {
                if let Some(k) = phone_exact_key(p) {
                    slot_remove(idx, k, pos);
                }
            }
        }
        if let Some(idx) = self.email_idx.as_mut() {
            for e in &emails {
                slot_remove(idx, email_key(e), pos);
            }
        }
    }

    /// Appends a record created now (or at `created`, e.g. FUB historical leads).
    pub(crate) fn create(&mut self, full: FullRec, created: Option<i64>, now: i64) -> u32 {
        let now = self.trunc(now);
        let created = created.map(|c| self.trunc(c)).unwrap_or(now);
        let updated = now.max(created);
        let id = self.take_id();
        if let Some(last) = self.recs.last()
            && created < last.created
            && self.created_monotone
        {
            self.created_monotone = false;
            self.created_dirty = true;
        }
        self.recs.push(Rec {
            id,
            created,
            updated,
            data: RecData::Full(Box::new(full)),
        });
        let pos = (self.recs.len() - 1) as u32;
        self.index_insert_updated(pos);
        if !self.created_monotone && !self.created_dirty {
            let k = self.key(pos, SortField::Created);
            let at = partition(self.by_created.len(), |i| {
                self.key(self.by_created[i], SortField::Created) < k
            });
            self.by_created.insert(at, pos);
        }
        self.hash_indexes_add(pos);
        self.note(pos, ChangeKind::Created);
        pos
    }

    /// Changes a record's data (materializing a seeded one) and sets its update time.
    pub(crate) fn modify(&mut self, pos: u32, updated: i64, f: impl FnOnce(&mut FullRec)) {
        self.modify_as(pos, updated, Some(ChangeKind::Updated), f);
    }

    /// [`Store::modify`], told to webhooks as `kind` (`None`: as nothing; the state change that goes
    /// with it is told by [`Store::set_state`]).
    pub(crate) fn modify_as(
        &mut self,
        pos: u32,
        updated: i64,
        kind: Option<ChangeKind>,
        f: impl FnOnce(&mut FullRec),
    ) {
        let updated = self.trunc(updated);
        self.hash_indexes_remove(pos);
        self.index_remove_updated(pos);
        {
            let rec = &mut self.recs[pos as usize];
            if let RecData::Gen(g) = &rec.data {
                rec.data = RecData::Full(Box::new(g.expand()));
            }
            if let RecData::Full(full) = &mut rec.data {
                f(full);
            }
            rec.updated = updated;
        }
        self.index_insert_updated(pos);
        self.hash_indexes_add(pos);
        if self.states.contains_key(&pos) {
            self.invalidate_hidden();
        }
        if let Some(kind) = kind {
            self.note(pos, kind);
        }
    }

    /// Sets only the update time.
    pub(crate) fn set_updated(&mut self, pos: u32, updated: i64) {
        let updated = self.trunc(updated);
        self.index_remove_updated(pos);
        self.recs[pos as usize].updated = updated;
        self.index_insert_updated(pos);
        if self.states.contains_key(&pos) {
            self.invalidate_hidden();
        }
        self.note(pos, ChangeKind::Updated);
    }

    /// Appends seeded records.
    pub(crate) fn append_generated(&mut self, generated: Vec<Generated>) {
        self.recs.reserve(generated.len());
        let mut last_created = self.recs.last().map(|r| r.created);
        for g in generated {
            let id = self.take_id();
            let created = self.trunc(g.created);
            let updated = self.trunc(g.updated).max(created);
            if let Some(lc) = last_created
                && created < lc
            {
                self.created_monotone = false;
            }
            last_created = Some(created);
            self.recs.push(Rec {
                id,
                created,
                updated,
                data: RecData::Gen(g.rec),
            });
        }
        self.updated_dirty = true;
        self.created_dirty = true;
        self.phone_idx = None;
        self.phone_exact_idx = None;
        self.email_idx = None;
        self.ensure_sorted(SortField::Updated);
    }

    /// Next ordinal for generated email local parts (unique across seedings).
    pub(crate) fn take_ordinals(&mut self, n: usize) -> u32 {
        let base = self.ordinal;
        self.ordinal = self.ordinal.wrapping_add(n as u32);
        base
    }

    fn ensure_phone_idx(&mut self) {
        if self.phone_idx.is_some() {
            return;
        }
        let mut map: HashMap<u64, Slot> = HashMap::with_capacity(self.recs.len());
        for (pos, r) in self.recs.iter().enumerate() {
            for p in r.phones_for_index() {
                if let Some(k) = phone_key(&p) {
                    slot_add(&mut map, k, pos as u32);
                }
            }
        }
        self.phone_idx = Some(map);
    }

    fn ensure_phone_exact_idx(&mut self) {
        if self.phone_exact_idx.is_some() {
            return;
        }
        let mut map: HashMap<u64, Slot> = HashMap::with_capacity(self.recs.len());
        for (pos, r) in self.recs.iter().enumerate() {
            for p in r.phones_for_index() {
                if let Some(k) = phone_exact_key(&p) {
                    slot_add(&mut map, k, pos as u32);
                }
            }
        }
        self.phone_exact_idx = Some(map);
    }

    fn ensure_email_idx(&mut self) {
        if self.email_idx.is_some() {
            return;
        }
        let mut map: HashMap<u64, Slot> = HashMap::with_capacity(self.recs.len());
        for (pos, r) in self.recs.iter().enumerate() {
            for e in r.emails_for_index() {
                slot_add(&mut map, email_key(&e), pos as u32);
            }
        }
        self.email_idx = Some(map);
    }

    /// Positions of the records having this phone (normalized match), ascending by id.
    pub(crate) fn find_phone(&mut self, raw: &str) -> Vec<u32> {
        let Some(key) = phone_key(raw) else {
            return Vec::new();
        };
        self.ensure_phone_idx();
        let mut v = match &self.phone_idx {
            Some(idx) => slot_positions(idx, key),
            None => Vec::new(),
        };
        v.retain(|p| self.recs[*p as usize].has_phone_key(key));
        v.sort_unstable();
        v
    }

    /// Positions of the records holding exactly this phone string (trimmed, case-insensitive),
    /// ascending by id.
    pub(crate) fn find_phone_exact(&mut self, raw: &str) -> Vec<u32> {
        let Some(key) = phone_exact_key(raw) else {
            return Vec::new();
        };
        let lower = raw.trim().to_lowercase();
        self.ensure_phone_exact_idx();
        let mut v = match &self.phone_exact_idx {
            Some(idx) => slot_positions(idx, key),
            None => Vec::new(),
        };
        v.retain(|p| self.recs[*p as usize].has_phone_exact(&lower));
        v.sort_unstable();
        v
    }

    /// Positions of the records having this email (case-insensitive), ascending by id.
    pub(crate) fn find_email(&mut self, raw: &str) -> Vec<u32> {
        let lower = raw.trim().to_lowercase();
        if lower.is_empty() {
            return Vec::new();
        }
        self.ensure_email_idx();
        let mut v = match &self.email_idx {
            Some(idx) => slot_positions(idx, email_key(&lower)),
            None => Vec::new(),
        };
        v.retain(|p| self.recs[*p as usize].has_email(&lower));
        v.sort_unstable();
        v
    }

    /// Rank of the record at `pos` in the given order (used for `offset` in metadata).
    pub(crate) fn cursor_of(&self, pos: u32, sort: SortField) -> Cursor {
        let (time, id) = self.key(pos, sort);
        Cursor { time, id }
    }

    /// One page.
    ///
    /// The view is an index in the requested order (all records, or a range of update
    /// times). Records the filter hides are either left out of the view when it is built
    /// anyway (candidates, ranges in another order, one state), or skipped in place: their
    /// sorted keys give the number of hidden records before any point of the view, so the
    /// rank of a visible record is its index minus that count (O(log h)).
    pub(crate) fn list(&mut self, q: &ListQuery) -> PageResult {
        let sort = match q.sort {
            SortField::Created if self.created_monotone => SortField::Id,
            s => s,
        };
        self.promote_pending(now_ms());
        self.ensure_sorted(SortField::Updated);
        self.ensure_sorted(sort);
        let skip_hidden = q.filter == StateFilter::Listed && !self.states.is_empty();
        if skip_hidden {
            self.ensure_hidden_keys(sort);
        }
        let has_range = q.updated_min.is_some() || q.updated_max.is_some();
        let in_range = |t: i64| {
            let lo_ok = match q.updated_min {
                Some((b, true)) => t >= b,
                Some((b, false)) => t > b,
                None => true,
            };
            let hi_ok = match q.updated_max {
                Some((b, true)) => t <= b,
                Some((b, false)) => t < b,
                None => true,
            };
            lo_ok && hi_ok
        };
        let states = &self.states;
        let shown = |pos: u32| match q.filter {
            StateFilter::Any => true,
            StateFilter::Listed => !states.contains_key(&pos),
            StateFilter::Only(s) => states.get(&pos).copied().unwrap_or(RecordState::Active) == s,
        };
        // Range of the update-time index matching the bounds.
        let upd = &self.by_updated;
        let recs = &self.recs;
        let lo = match q.updated_min {
            Some((b, incl)) => partition(upd.len(), |i| {
                let t = recs[upd[i] as usize].updated;
                if incl { t < b } else { t <= b }
            }),
            None => 0,
        };
        let hi = match q.updated_max {
            Some((b, incl)) => partition(upd.len(), |i| {
                let t = recs[upd[i] as usize].updated;
                if incl { t <= b } else { t < b }
            }),
            None => upd.len(),
        }
        .max(lo);
        // `in_place`: the view still holds records the filter hides.
        let (view, in_place) = match (&q.candidates, q.filter, sort) {
            (Some(c), _, _) => {
                let mut v: Vec<u32> = c
                    .iter()
                    .copied()
                    .filter(|p| {
                        (*p as usize) < recs.len()
                            && in_range(recs[*p as usize].updated)
                            && shown(*p)
                    })
                    .collect();
                v.sort_unstable_by_key(|p| self.key(*p, sort));
                v.dedup();
                (View::Owned(v), false)
            }
            (None, StateFilter::Only(_), _) => {
                let mut v: Vec<u32> = states
                    .keys()
                    .copied()
                    .filter(|p| shown(*p) && in_range(recs[*p as usize].updated))
                    .collect();
                v.sort_unstable_by_key(|p| self.key(*p, sort));
                (View::Owned(v), false)
            }
            (None, _, SortField::Updated) => (View::Slice(&upd[lo..hi]), skip_hidden),
            (None, _, SortField::Id) if !has_range => (View::Identity(recs.len()), skip_hidden),
            (None, _, SortField::Created) if !has_range => {
                (View::Slice(&self.by_created), skip_hidden)
            }
            (None, _, _) => {
                let mut v: Vec<u32> = upd[lo..hi].iter().copied().filter(|p| shown(*p)).collect();
                v.sort_unstable_by_key(|p| self.key(*p, sort));
                (View::Owned(v), false)
            }
        };
        let n = view.len();
        let kf = |i: usize| self.key(view.get(i), sort);
        // Keys of the hidden records inside the view (its keys are unique and sorted).
        let hidden: &[(i64, u64)] = match (in_place, &self.hidden_keys[sort.index()]) {
            (true, Some(h)) if n > 0 => {
                let (first, last) = (kf(0), kf(n - 1));
                let a = partition(h.len(), |j| h[j] < first);
                let b = partition(h.len(), |j| h[j] <= last);
                &h[a..b.max(a)]
            }
            _ => &[],
        };
        let total = n - hidden.len();
        let hidden_before = |k: (i64, u64)| partition(hidden.len(), |j| hidden[j] < k);
        // Number of shown records in view[..i].
        let shown_before = |i: usize| {
            if i >= n {
                total
            } else {
                i - hidden_before(kf(i))
            }
        };
        let check = !hidden.is_empty();
        let visible_at = |i: usize| !check || !states.contains_key(&view.get(i));
        let ck = q.after.map(|c| match sort {
            SortField::Id => (0, c.id),
            _ => (c.time, c.id),
        });
        let limit = q.limit;
        let mut items = Vec::with_capacity(limit.min(total));
        if !q.desc {
            let begin = match ck {
                Some(ck) => partition(n, |i| kf(i) <= ck),
                None => 0,
            };
            let rank = shown_before(begin).saturating_add(q.offset).min(total);
            let mut i = if check {
                partition(n, |i| shown_before(i) < rank)
            } else {
                rank
            };
            while i < n && items.len() < limit {
                if visible_at(i) {
                    items.push(view.get(i));
                }
                i += 1;
            }
            let more = rank + items.len() < total;
            PageResult {
                items,
                total,
                rank,
                more,
            }
        } else {
            let stop = match ck {
                Some(ck) => partition(n, |i| kf(i) < ck),
                None => n,
            };
            let top = shown_before(stop).saturating_sub(q.offset);
            let mut i = if check {
                partition(n, |i| shown_before(i) < top)
            } else {
                top
            };
            while i > 0 && items.len() < limit {
                i -= 1;
                if visible_at(i) {
                    items.push(view.get(i));
                }
            }
            PageResult {
                more: top > items.len(),
                items,
                total,
                rank: total - top,
            }
        }
    }
}
