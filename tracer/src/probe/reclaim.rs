//! The kernel's reclaim totals: every reclaim pass, memcg or global
//! direct, is added by the programs to `RECLAIM_TOTALS` (per memory
//! cgroup), `DIRECT_RECLAIM_TOTALS` and the `RECLAIM_PASSES` counter,
//! whether or not it is also written to the reclaim ring. The agent reads
//! them once a second instead of decoding a record per pass.
//!
//! The totals only grow; what the model needs is what was added since the
//! last read ([`delta`], [`deltas`], pure). An entry the LRU map evicted,
//! or one recreated for a reused id, starts again from zero: a value below
//! the last one read, or a key not read before, is taken whole.

use std::collections::HashMap;

use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use tracer_ebpf::{RECLAIM_TOTAL_BUCKETS, ReclaimTotals, TOTALS_SLOT};

use crate::probe::{LoadError, Tracer, error_chain};

/// What was added to the totals since the previous read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deltas {
    /// Memory cgroups with new passes, by id.
    pub memcg: Vec<(u64, ReclaimTotals)>,
    /// Global direct reclaim (count 0: none).
    pub direct: ReclaimTotals,
}

impl Deltas {
    pub fn is_empty(&self) -> bool {
        self.memcg.is_empty() && self.direct.count == 0
    }
}

/// What `cur` added to `prev`. Without a `prev`, or when any field went
/// down (the entry was evicted and created again, or its id reused), all
/// of `cur` is new.
pub fn delta(prev: Option<&ReclaimTotals>, cur: &ReclaimTotals) -> ReclaimTotals {
    let Some(p) = prev else {
        return *cur;
    };
    let went_down = cur.count < p.count
        || cur.pages < p.pages
        || cur.total_ns < p.total_ns
        || cur.le.iter().zip(&p.le).any(|(c, p)| c < p);
    if went_down {
        return *cur;
    }
    let mut le = [0; RECLAIM_TOTAL_BUCKETS];
    for (d, (c, p)) in le.iter_mut().zip(cur.le.iter().zip(&p.le)) {
        *d = c - p;
    }
    ReclaimTotals {
        count: cur.count - p.count,
        pages: cur.pages - p.pages,
        total_ns: cur.total_ns - p.total_ns,
        le,
    }
}

/// Whether a read of an entry is whole: the kernel adds a pass to its
/// fields one atomic add at a time, so a lookup racing a pass can see the
/// count without the bucket or the other way round. Count and buckets
/// must agree, or the metrics page would show a bucket above its total.
pub fn consistent(t: &ReclaimTotals) -> bool {
    t.le.iter().fold(0u64, |a, n| a.wrapping_add(*n)) == t.count
}

/// Of a read of one entry, what to take as its value: the read when it
/// is whole; else a second lookup (`again`) when that one is whole, or
/// when it is the same as the first (a tear that stays, as a pass added to
/// an entry the LRU map was reusing would leave: taken as it is rather
/// than never counted); else (a pass was being added) the value read last
/// time, so the pass counts at the next tick. An entry never read whole
/// before is then left out until it is. The flag says whether the value
/// is what the entry holds (false: the read must be made again).
pub fn settle(
    last: &HashMap<u64, ReclaimTotals>,
    id: u64,
    read: ReclaimTotals,
    again: impl FnOnce() -> Option<ReclaimTotals>,
) -> (Option<(u64, ReclaimTotals)>, bool) {
    if consistent(&read) {
        return (Some((id, read)), true);
    }
    match again() {
        Some(t) if consistent(&t) || t == read => (Some((id, t)), true),
        _ => (last.get(&id).map(|t| (id, *t)), false),
    }
}

/// The deltas of a whole read of the map, `current`, against the previous
/// one, `last`, which becomes `current`: keys gone from the map are
/// forgotten, so one that comes back counts from zero. Only cgroups whose
/// totals changed are returned (a read can see a pass's count before its
/// pages: those come as a delta without passes).
pub fn deltas(
    last: &mut HashMap<u64, ReclaimTotals>,
    current: impl IntoIterator<Item = (u64, ReclaimTotals)>,
) -> Vec<(u64, ReclaimTotals)> {
    let mut out = Vec::new();
    let mut next = HashMap::with_capacity(last.len());
    for (id, cur) in current {
        let d = delta(last.get(&id), &cur);
        if d != ReclaimTotals::default() {
            out.push((id, d));
        }
        next.insert(id, cur);
    }
    *last = next;
    out.sort_unstable_by_key(|(id, _)| *id);
    out
}

/// Reads the totals maps; keeps the previous read to take differences.
pub struct ReclaimTotalsReader {
    passes: Array<MapData, u64>,
    totals: BpfHashMap<MapData, u64, ReclaimTotals>,
    direct: Array<MapData, ReclaimTotals>,
    /// `RECLAIM_PASSES` as last read: unchanged means nothing to walk.
    seen_passes: u64,
    last: HashMap<u64, ReclaimTotals>,
    last_direct: ReclaimTotals,
}

fn take<T>(tracer: &mut Tracer, name: &str) -> Result<T, LoadError>
where
    T: TryFrom<aya::maps::Map>,
    T::Error: std::error::Error,
{
    let map = tracer
        .ebpf_mut()
        .take_map(name)
        .ok_or_else(|| LoadError::Load(format!("{name} map missing")))?;
    T::try_from(map).map_err(|e| LoadError::Load(error_chain(&e)))
}

impl ReclaimTotalsReader {
    pub fn new(tracer: &mut Tracer) -> Result<Self, LoadError> {
        Ok(Self {
            passes: take(tracer, "RECLAIM_PASSES")?,
            totals: take(tracer, "RECLAIM_TOTALS")?,
            direct: take(tracer, "DIRECT_RECLAIM_TOTALS")?,
            seen_passes: 0,
            last: HashMap::new(),
            last_direct: ReclaimTotals::default(),
        })
    }

    /// The kernel's pass counter: every memcg and direct pass ended so far.
    pub fn passes(&self) -> u64 {
        self.passes.get(&TOTALS_SLOT, 0).unwrap_or(0)
    }

    /// What the kernel added since the last call. One lookup when no pass
    /// ended anywhere; otherwise a walk of the cgroups' map. The counter
    /// is taken as seen only after a read that got every entry whole, so
    /// an entry that was changing, or a walk cut short, is read again at
    /// the next tick even if no other pass ends.
    pub fn read(&mut self) -> Deltas {
        let passes = self.passes();
        if passes == self.seen_passes {
            return Deltas::default();
        }
        let mut whole = true;
        let memcg = match self.walk() {
            Some(current) => {
                let mut settled = HashMap::with_capacity(current.len());
                for (id, t) in current {
                    let (value, ok) = settle(&self.last, id, t, || self.totals.get(&id, 0).ok());
                    whole &= ok;
                    if let Some((id, t)) = value {
                        settled.insert(id, t);
                    }
                }
                deltas(&mut self.last, settled)
            }
            // Keep the last read: what was added shows in the next.
            None => {
                whole = false;
                Vec::new()
            }
        };
        let direct = match self.direct.get(&TOTALS_SLOT, 0) {
            Ok(cur) if consistent(&cur) => {
                let d = delta(Some(&self.last_direct), &cur);
                self.last_direct = cur;
                d
            }
            // Unreadable, or a pass half added: counted next time.
            _ => {
                whole = false;
                ReclaimTotals::default()
            }
        };
        if whole {
            self.seen_passes = passes;
        }
        Deltas { memcg, direct }
    }

    /// Every entry of the cgroups' map, once each, or `None` when the walk
    /// failed. The kernel's next-key starts again from the first key when
    /// the key the walk stands on was evicted meanwhile, so a key can come
    /// twice (the later read wins) and the walk is bounded.
    fn walk(&self) -> Option<HashMap<u64, ReclaimTotals>> {
        let bound = 2 * super::reclaim_totals_entries() as usize;
        let mut current = HashMap::with_capacity(self.last.len());
        for (n, item) in self.totals.iter().enumerate() {
            if n >= bound {
                return None;
            }
            let (id, t) = item.ok()?;
            current.insert(id, t);
        }
        Some(current)
    }

    /// The current totals of one cgroup, for tests and the bench.
    pub fn totals_of(&self, memcg_id: u64) -> Option<ReclaimTotals> {
        self.totals.get(&memcg_id, 0).ok()
    }

    /// The current totals of global direct reclaim.
    pub fn direct_totals(&self) -> ReclaimTotals {
        self.direct.get(&TOTALS_SLOT, 0).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(count: u64, pages: u64, total_ns: u64, bucket: usize) -> ReclaimTotals {
        let mut le = [0; RECLAIM_TOTAL_BUCKETS];
        le[bucket] = count;
        ReclaimTotals {
            count,
            pages,
            total_ns,
            le,
        }
    }

    #[test]
    fn delta_subtracts_what_was_read_before() {
        let d = delta(Some(&t(3, 30, 300, 2)), &t(5, 70, 800, 2));
        assert_eq!(d, t(2, 40, 500, 2));
        assert_eq!(delta(Some(&t(5, 70, 800, 2)), &t(5, 70, 800, 2)).count, 0);
    }

    #[test]
    fn a_new_or_reset_entry_counts_whole() {
        assert_eq!(delta(None, &t(4, 8, 16, 0)), t(4, 8, 16, 0));
        // Evicted and created again: fewer passes than last read.
        assert_eq!(
            delta(Some(&t(9, 90, 900, 1)), &t(2, 5, 50, 1)),
            t(2, 5, 50, 1)
        );
        // Same count, but a bucket went down: a reused entry as well.
        let mut cur = t(9, 90, 900, 1);
        cur.le[1] = 0;
        cur.le[3] = 9;
        assert_eq!(delta(Some(&t(9, 90, 900, 1)), &cur), cur);
    }

    #[test]
    fn deltas_forget_keys_gone_from_the_map() {
        let mut last = HashMap::new();
        let first = deltas(&mut last, [(7, t(1, 1, 10, 0)), (8, t(2, 2, 20, 0))]);
        assert_eq!(first, vec![(7, t(1, 1, 10, 0)), (8, t(2, 2, 20, 0))]);
        // 7 unchanged (not returned), 8 evicted.
        let second = deltas(&mut last, [(7, t(1, 1, 10, 0))]);
        assert!(second.is_empty());
        assert!(!last.contains_key(&8));
        // 8 back with fewer passes than before its eviction: counted whole.
        let third = deltas(&mut last, [(7, t(3, 4, 40, 0)), (8, t(1, 1, 5, 0))]);
        assert_eq!(third, vec![(7, t(2, 3, 30, 0)), (8, t(1, 1, 5, 0))]);
    }

    #[test]
    fn a_read_racing_a_pass_waits_for_the_next() {
        let mut last = HashMap::new();
        last.insert(7, t(3, 4, 40, 0));
        // The count of a fourth pass is in, its bucket not yet.
        let mut torn = t(4, 5, 50, 0);
        torn.le[0] = 3;
        assert!(!consistent(&torn));
        // Still torn, differently, at the second look: last time's value.
        let mut later = torn;
        later.count = 5;
        assert_eq!(
            settle(&last, 7, torn, || Some(later)),
            (Some((7, t(3, 4, 40, 0))), false)
        );
        // Whole at the second look: that.
        assert_eq!(
            settle(&last, 7, torn, || Some(t(4, 5, 50, 0))),
            (Some((7, t(4, 5, 50, 0))), true)
        );
        // The same tear twice: it stays, taken as it is.
        assert_eq!(
            settle(&last, 7, torn, || Some(torn)),
            (Some((7, torn)), true)
        );
        // Never read whole before, and gone at the second look: left out,
        // to be read again.
        assert_eq!(settle(&last, 9, torn, || None), (None, false));
        assert_eq!(
            settle(&last, 7, t(4, 5, 50, 0), || None),
            (Some((7, t(4, 5, 50, 0))), true)
        );
    }

    #[test]
    fn pages_seen_after_their_pass_still_count() {
        let mut last = HashMap::new();
        // The pass's count and bucket were read, its pages not yet.
        assert_eq!(
            deltas(&mut last, [(7, t(1, 0, 0, 0))]),
            vec![(7, t(1, 0, 0, 0))]
        );
        // The next read brings them: a delta without a pass.
        assert_eq!(
            deltas(&mut last, [(7, t(1, 6, 90, 0))]),
            vec![(7, t(0, 6, 90, 0))]
        );
    }
}
