//! The incremental-sync high-water mark.
//!
//! CRMs are queried with `updated >= since` (never `>`), so records that share the last seen
//! timestamp are fetched again; [`SyncCursor::admits`] drops the ones already stored, so they are
//! neither missed nor counted twice.

use chrono::{DateTime, Duration, Utc};

/// How far ahead of our clock a record's update time may be and still move the cursor. A CRM's clock
/// may run a little ahead of ours; a record dated much further (a typo, a bad import) would otherwise
/// move the cursor past every record changed before that date, for every later sync.
pub const MAX_CLOCK_SKEW: Duration = Duration::minutes(5);
use serde::{Deserialize, Serialize};

/// Persisted per integration (`crm_integrations.sync_cursor`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncCursor {
    /// The latest `updated_at` stored so far; `None` means "from the beginning".
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    /// External ids whose `updated_at == since`, already stored.
    #[serde(default)]
    pub boundary_ids: Vec<String>,
}

impl SyncCursor {
    /// An explicit `?since=` override: no boundary ids, so records at exactly `since` are
    /// admitted.
    pub fn starting_at(since: DateTime<Utc>) -> Self {
        SyncCursor {
            since: Some(since),
            boundary_ids: Vec::new(),
        }
    }

    /// Whether a fetched record still has to be stored: newer than `since`, or exactly at
    /// `since` and not already stored. Records without a time, and every record when there is no
    /// `since`, are admitted.
    pub fn admits(&self, external_id: &str, updated_at: Option<DateTime<Utc>>) -> bool {
        match (self.since, updated_at) {
            (None, _) | (_, None) => true,
            (Some(since), Some(t)) => {
                t > since || (t == since && !self.boundary_ids.iter().any(|b| b == external_id))
            }
        }
    }

    /// [`SyncCursor::observe`], unless `updated_at` is later than `latest` (our clock plus
    /// [`MAX_CLOCK_SKEW`]): such a time is not a high-water mark we can trust, and it changes nothing.
    /// Returns whether the time was trusted.
    pub fn observe_until(
        &mut self,
        external_id: &str,
        updated_at: Option<DateTime<Utc>>,
        latest: DateTime<Utc>,
    ) -> bool {
        if updated_at.is_some_and(|t| t > latest) {
            return false;
        }
        self.observe(external_id, updated_at);
        true
    }

    /// Takes in what another cursor has seen (the high-water mark of a finished read): the later of
    /// the two, with the boundary ids of both when they are at the same instant.
    pub fn merge(&mut self, other: &SyncCursor) {
        let Some(t) = other.since else { return };
        match self.since {
            Some(since) if t < since => {}
            Some(since) if t == since => {
                for id in &other.boundary_ids {
                    if !self.boundary_ids.contains(id) {
                        self.boundary_ids.push(id.clone());
                    }
                }
            }
            _ => *self = other.clone(),
        }
    }

    /// Records that a record was stored: a later time moves `since` there and resets
    /// `boundary_ids` to `[id]`; an equal time adds `id` (once); an older time or `None`
    /// changes nothing.
    pub fn observe(&mut self, external_id: &str, updated_at: Option<DateTime<Utc>>) {
        let Some(t) = updated_at else { return };
        match self.since {
            Some(since) if t < since => {}
            Some(since) if t == since => {
                if !self.boundary_ids.iter().any(|b| b == external_id) {
                    self.boundary_ids.push(external_id.to_owned());
                }
            }
            _ => {
                self.since = Some(t);
                self.boundary_ids = vec![external_id.to_owned()];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> Option<DateTime<Utc>> {
        Some(s.parse().unwrap())
    }

    const T1: &str = "2024-05-01T10:00:00Z";
    const T2: &str = "2024-05-01T10:00:05Z";
    const T0: &str = "2024-05-01T09:59:59Z";

    #[test]
    fn empty_cursor_admits_everything() {
        let c = SyncCursor::default();
        assert!(c.admits("1", t(T1)));
        assert!(c.admits("1", None));
    }

    #[test]
    fn explicit_since_admits_records_at_exactly_since() {
        let c = SyncCursor::starting_at(t(T1).unwrap());
        assert!(c.boundary_ids.is_empty());
        assert!(c.admits("7", t(T1)));
        assert!(c.admits("7", t(T2)));
        assert!(!c.admits("7", t(T0)));
        assert!(c.admits("7", None));
    }

    #[test]
    fn ties_at_the_boundary_are_neither_missed_nor_recounted() {
        // Run 1 stores a and b, both at T1.
        let mut c = SyncCursor::default();
        for id in ["a", "b"] {
            assert!(c.admits(id, t(T1)));
            c.observe(id, t(T1));
        }
        c.observe("a", t(T1)); // seen twice, listed once
        assert_eq!(c.since, t(T1));
        assert_eq!(c.boundary_ids, ["a", "b"]);

        // Run 2 asks for >= T1: a and b come back, plus c that was written at T1 after run 1.
        assert!(!c.admits("a", t(T1)));
        assert!(!c.admits("b", t(T1)));
        assert!(c.admits("c", t(T1)));
        assert!(c.admits("a", t(T2))); // a changed again later
        assert!(!c.admits("z", t(T0)));
        c.observe("c", t(T1));
        assert_eq!(c.boundary_ids, ["a", "b", "c"]);

        // A later time resets the boundary; older times and None change nothing.
        c.observe("d", t(T2));
        assert_eq!(
            (c.since, c.boundary_ids.clone()),
            (t(T2), vec!["d".to_owned()])
        );
        c.observe("e", t(T0));
        c.observe("f", None);
        assert_eq!(
            (c.since, c.boundary_ids.clone()),
            (t(T2), vec!["d".to_owned()])
        );
        assert!(c.admits("a", t(T2)));
    }

    #[test]
    fn merging_keeps_the_later_mark_and_both_boundaries_at_a_tie() {
        let mut a = SyncCursor::default();
        a.observe("a", t(T1));
        let mut b = SyncCursor::default();
        b.observe("b", t(T1));
        a.merge(&b);
        assert_eq!(
            (a.since, a.boundary_ids.clone()),
            (t(T1), vec!["a".into(), "b".into()])
        );
        let mut later = SyncCursor::default();
        later.observe("c", t(T2));
        a.merge(&later);
        assert_eq!(a, later);
        a.merge(&SyncCursor::default());
        a.merge(&b);
        assert_eq!(a, later, "an older or empty mark changes nothing");
    }

    #[test]
    fn a_time_in_the_future_does_not_move_the_cursor() {
        let mut c = SyncCursor::default();
        let now: DateTime<Utc> = T1.parse().unwrap();
        let latest = now + MAX_CLOCK_SKEW;
        assert!(c.observe_until("a", t(T2), latest));
        assert_eq!(c.since, t(T2));
        assert!(!c.observe_until("b", t("2030-01-01T00:00:00Z"), latest));
        assert_eq!(
            (c.since, c.boundary_ids.clone()),
            (t(T2), vec!["a".to_owned()])
        );
        // A clock a few minutes ahead is tolerated.
        assert!(c.observe_until("c", t("2024-05-01T10:04:00Z"), latest));
        assert_eq!(c.since, t("2024-05-01T10:04:00Z"));
    }

    #[test]
    fn serializes_for_storage_and_reads_partial_json() {
        let mut c = SyncCursor::default();
        c.observe("651095960136641", t(T1));
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v,
            json!({"since": "2024-05-01T10:00:00Z", "boundary_ids": ["651095960136641"]})
        );
        assert_eq!(serde_json::from_value::<SyncCursor>(v).unwrap(), c);
        assert_eq!(
            serde_json::from_value::<SyncCursor>(json!({})).unwrap(),
            SyncCursor::default()
        );
    }
}
