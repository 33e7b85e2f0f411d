//! Online aggregation state: per entity, the raw events its windows can still see,
//! kept in the online store as one binary value, merged on insert and aggregated at
//! read time by the same rules as the offline sweep.
//!
//! **What is kept.** For a key whose newest event is at `E`, every later lookup is at
//! some `T >= E`, whose windows `[T - W, T)` start at or after `E - W`: events older
//! than `E - Wmax` (the longest window) can never count again and are dropped, except
//! each `last` column's newest non-null event (`last` has no window). So state is
//! bounded by the events of one longest window per key. Late events merge in at their
//! place; an event already present (same insertion sequence number) is not added
//! twice, so replaying a commit changes nothing.
//!
//! **Reads** ([`super::serve`]) find each window's index range (two binary
//! searches) and compute each op from the block summaries inside it plus the events
//! at its ends: O(log n + n/64 + 64) per feature, exact (sums in double-double, as
//! offline). **Format and merging**: [`super::layout`]. Every read is bounds-checked:
//! a damaged value is an error, never a crash.
//!
//! [`State`] is the decoded form, and the reference the in-place merge
//! ([`super::layout::merge`]) is tested against.

use std::collections::HashSet;

use super::serve::StateView;

/// One value of an event.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    Null,
    F(f64),
    I(i64),
    B(Vec<u8>),
}

impl Val {
    fn valid(&self) -> bool {
        match self {
            Val::Null => false,
            Val::F(x) => !x.is_nan(),
            _ => true,
        }
    }
}

/// The column kinds a state stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    F64 = 0,
    I64 = 1,
    Bytes = 2,
}

impl Tag {
    /// The tag stored as `code`; None for anything else (damage).
    pub fn from_code(code: u8) -> Option<Tag> {
        Some(match code {
            0 => Tag::F64,
            1 => Tag::I64,
            2 => Tag::Bytes,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub e: i64,
    pub c: i64,
    pub seq: i64,
    pub vals: Vec<Val>,
}

/// A decoded state: events sorted by (e, c, seq).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    pub tags: Vec<Tag>,
    pub events: Vec<Event>,
}

pub(super) struct Rd<'a>(pub(super) &'a [u8]);

impl<'a> Rd<'a> {
    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    pub(super) fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
}

impl State {
    pub fn new(tags: Vec<Tag>) -> State {
        State {
            tags,
            events: Vec::new(),
        }
    }

    /// Parses a stored state; None when the bytes are not one (damage). The bytes are
    /// checked by the same parser the serving path reads them with ([`StateView`]).
    pub fn decode(bytes: &[u8]) -> Option<State> {
        let view = StateView::parse(bytes)?;
        let events: Vec<Event> = (0..view.len()).map(|i| view.event(i)).collect();
        let sorted = events
            .windows(2)
            .all(|w| (w[0].e, w[0].c, w[0].seq) < (w[1].e, w[1].c, w[1].seq));
        sorted.then_some(State {
            tags: view.tags(),
            events,
        })
    }

    /// The stored bytes ([`super::layout`]).
    pub fn encode(&self) -> Vec<u8> {
        super::layout::encode_events(&self.tags, &self.events)
    }

    /// Adds `new` events (any order; ones already present by sequence number are
    /// skipped), then drops what no future lookup can see: events older than the
    /// newest minus `keep_ns`, except, for each column of `last_cols`, its newest valid
    /// value and its newest valid value before the newest event's time (what `last`
    /// gives at exactly that time, when the window `[.., t)` leaves the newest out).
    pub fn merge(&mut self, new: Vec<Event>, keep_ns: i64, last_cols: &[usize]) {
        let seen: HashSet<i64> = self.events.iter().map(|e| e.seq).collect();
        self.events
            .extend(new.into_iter().filter(|e| !seen.contains(&e.seq)));
        self.events.sort_by_key(|e| (e.e, e.c, e.seq));
        let Some(newest) = self.events.last().map(|e| e.e) else {
            return;
        };
        let oldest = newest.saturating_sub(keep_ns);
        let mut keep: Vec<bool> = self.events.iter().map(|e| e.e >= oldest).collect();
        for &j in last_cols {
            if let Some(i) = self.events.iter().rposition(|e| e.vals[j].valid()) {
                keep[i] = true;
            }
            let before = |e: &Event| e.e < newest && e.vals[j].valid();
            if let Some(i) = self.events.iter().rposition(before) {
                keep[i] = true;
            }
        }
        let mut i = 0;
        self.events.retain(|_| {
            i += 1;
            keep[i - 1]
        });
    }

    /// The newest event time (the state's stamp in the online store).
    pub fn newest(&self) -> Option<i64> {
        self.events.last().map(|e| e.e)
    }
}

#[cfg(test)]
mod tests {
    use super::super::serve::{lags_ns, Served, StateView};
    use super::super::{Closed, Op};
    use super::*;

    fn ev(e: i64, seq: i64, x: Option<f64>, s: &str) -> Event {
        Event {
            e,
            c: 0,
            seq,
            vals: vec![x.map_or(Val::Null, Val::F), Val::B(s.as_bytes().to_vec())],
        }
    }

    #[test]
    fn last_keeps_the_value_a_lookup_at_the_newest_time_sees() {
        // keep = 10: the event at 0 is older than every window, but `last` at t = 50
        // (window [.., 50), which leaves the newest out) gives its value.
        let mut s = State::new(vec![Tag::F64, Tag::Bytes]);
        s.merge(vec![ev(0, 1, Some(1.0), "old")], 10, &[1]);
        s.merge(vec![ev(50, 2, Some(2.0), "new")], 10, &[1]);
        assert_eq!(s.events.len(), 2);
        let bytes = s.encode();
        let v = StateView::parse(&bytes).unwrap();
        let at_newest = v.serve(Op::Last, Some(1), lags_ns(None, Closed::Left), 50);
        assert_eq!(at_newest, Served::Events(vec![0]));
        // A third event drops the first: the second is now the one before the newest.
        s.merge(vec![ev(60, 3, None, "newer")], 10, &[1]);
        assert_eq!(
            s.events.iter().map(|e| e.e).collect::<Vec<_>>(),
            vec![50, 60]
        );
    }

    #[test]
    fn encode_decode_round_trip_and_damage_is_detected() {
        let mut s = State::new(vec![Tag::F64, Tag::Bytes]);
        s.merge(
            vec![ev(5, 1, Some(1.5), "a"), ev(3, 2, None, "bc")],
            100,
            &[],
        );
        let bytes = s.encode();
        assert_eq!(State::decode(&bytes).unwrap(), s);
        for cut in 0..bytes.len() {
            assert!(State::decode(&bytes[..cut]).is_none());
        }
    }

    #[test]
    fn merge_is_idempotent_and_prunes_to_the_longest_window() {
        let mut s = State::new(vec![Tag::F64, Tag::Bytes]);
        s.merge(
            vec![ev(10, 1, Some(1.0), "a"), ev(100, 2, Some(2.0), "b")],
            50,
            &[],
        );
        assert_eq!(s.events.len(), 1);
        let before = s.clone();
        s.merge(vec![ev(100, 2, Some(2.0), "b")], 50, &[]);
        assert_eq!(s, before);
        // `last` keeps its column's newest valid event even when old.
        let mut s = State::new(vec![Tag::F64, Tag::Bytes]);
        s.merge(
            vec![ev(10, 1, Some(1.0), "a"), ev(100, 2, None, "b")],
            50,
            &[0],
        );
        assert_eq!(s.events.len(), 2);
        let bytes = s.encode();
        let got = StateView::parse(&bytes).unwrap().serve(
            Op::Last,
            Some(0),
            lags_ns(None, Closed::Left),
            200,
        );
        assert_eq!(got, Served::Events(vec![0]));
    }

    #[test]
    fn windows_at_a_lookup() {
        let mut s = State::new(vec![Tag::F64, Tag::Bytes]);
        s.merge(
            vec![
                ev(10, 1, Some(1.0), "a"),
                ev(20, 2, Some(2.0), "b"),
                ev(30, 3, Some(4.0), "a"),
            ],
            1000,
            &[],
        );
        let bytes = s.encode();
        let v = StateView::parse(&bytes).unwrap();
        let at = |op, w, closed, t| v.serve(op, Some(0), lags_ns(Some(w), closed), t);
        assert_eq!(at(Op::Sum, 10, Closed::Left, 30), Served::Float(2.0));
        assert_eq!(at(Op::Sum, 10, Closed::Both, 30), Served::Float(6.0));
        assert_eq!(at(Op::Sum, 10, Closed::Right, 30), Served::Float(4.0));
        assert_eq!(at(Op::Count, 100, Closed::Left, 31), Served::Int(3));
        assert_eq!(
            v.serve(Op::Distinct, Some(1), lags_ns(Some(100), Closed::Left), 31),
            Served::Int(2)
        );
        assert_eq!(at(Op::Max, 100, Closed::Left, 25), Served::Float(2.0));
    }
}
