//! The kernel's own account of who is being throttled right now: the
//! `THROTTLE` map, one entry per thread inside the memory.high throttle
//! function, written at entry and deleted at exit by the programs.
//!
//! User space reads it to check its episodes in progress before it trusts
//! them: before every kill, after any lost record, and once a second. An
//! episode the model counts but the map no longer has lost its end record.

use aya::maps::{HashMap as BpfHashMap, MapData};
use tracer_ebpf::ThrottleState;

use crate::probe::{LoadError, Tracer, error_chain};

/// One thread inside the throttle function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inside {
    pub tid: u32,
    pub start_ns: u64,
    pub memcg_id: u64,
    pub over_high_id: u64,
}

pub struct InFlight {
    map: BpfHashMap<MapData, u32, ThrottleState>,
}

impl InFlight {
    pub fn new(tracer: &mut Tracer) -> Result<Self, LoadError> {
        let map = tracer
            .ebpf_mut()
            .take_map("THROTTLE")
            .ok_or_else(|| LoadError::Load("THROTTLE map missing".into()))?;
        Ok(Self {
            map: BpfHashMap::try_from(map).map_err(|e| LoadError::Load(error_chain(&e)))?,
        })
    }

    /// Reads every entry into `out` (cleared first; reuse it, so the kill
    /// path allocates nothing once it has grown). Entries that change
    /// while being read are skipped: a thread that just left is not inside.
    pub fn read(&self, out: &mut Vec<Inside>) {
        out.clear();
        for (tid, s) in self.map.iter().flatten() {
            out.push(Inside {
                tid,
                start_ns: s.start_ns,
                memcg_id: s.memcg_id,
                over_high_id: s.over_high_id,
            });
        }
    }
}

/// Whether `tid` is inside in the episode that began at `start`.
pub fn is_inside(inside: &[Inside], tid: u32, start: u64) -> bool {
    inside.iter().any(|i| i.tid == tid && i.start_ns == start)
}
