//! Decode: ring-buffer records → typed [`Event`]s.
//!
//! The second stage of the pipeline. A record is the raw bytes of one of
//! the `#[repr(C)]` structs in `tracer_ebpf`; its first `u32` says which.
//! Lengths are checked before anything is read, so a short or unknown
//! record is an error, not undefined behaviour.

use std::mem::size_of;

use tracer_ebpf::{
    BrakeEvent, OomKillEvent, ReclaimEvent, ThrottleEndEvent, ThrottleStartEvent, kind, oom_flags,
    reclaim_flags,
};

use crate::event::{Brake, Event, OomKill, Reclaim, RssPages, Throttle, ThrottleStart};

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {0} bytes is too short for a kind")]
    NoKind(usize),
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("record kind {kind} needs {need} bytes, got {got}")]
    Short { kind: u32, need: usize, got: usize },
}

/// Reads a `T` from the front of `bytes` after checking the length.
fn read<T: Copy>(bytes: &[u8], record_kind: u32) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short {
            kind: record_kind,
            need: size_of::<T>(),
            got: bytes.len(),
        });
    }
    // SAFETY: the length is checked above; T is a #[repr(C)] plain-data
    // struct from tracer_ebpf for which every bit pattern is valid, and
    // read_unaligned has no alignment requirement.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let head: [u8; 4] = bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(DecodeError::NoKind(bytes.len()))?;
    let record_kind = u32::from_ne_bytes(head);
    Ok(match record_kind {
        kind::THROTTLE_START => {
            let r: ThrottleStartEvent = read(bytes, record_kind)?;
            Event::ThrottleStart(ThrottleStart {
                ts_ns: r.ts_ns,
                task: r.task.into(),
                memcg_id: r.memcg_id,
                over_high_id: r.over_high_id,
                over_high_usage_pages: r.over_high_usage,
                over_high_limit_pages: r.over_high_limit,
                nr_pages: r.nr_pages,
            })
        }
        kind::THROTTLE_END => {
            let r: ThrottleEndEvent = read(bytes, record_kind)?;
            Event::Throttle(Throttle {
                ts_ns: r.ts_ns,
                start_ns: r.start_ns,
                task: r.task.into(),
                memcg_id: r.memcg_id,
                over_high_id: r.over_high_id,
                reclaim_ns: r.reclaim_ns,
                reclaimed_pages: r.reclaimed_pages,
                nr_pages: r.nr_pages,
            })
        }
        kind::RECLAIM | kind::DIRECT_RECLAIM => {
            let r: ReclaimEvent = read(bytes, record_kind)?;
            let reclaim = Reclaim {
                ts_ns: r.ts_ns,
                start_ns: r.start_ns,
                task: r.task.into(),
                memcg_id: r.memcg_id,
                memcg_exact: r.flags & reclaim_flags::MEMCG_EXACT != 0,
                in_throttle: r.flags & reclaim_flags::IN_THROTTLE != 0,
                nr_reclaimed: r.nr_reclaimed,
            };
            if record_kind == kind::RECLAIM {
                Event::Reclaim(reclaim)
            } else {
                Event::DirectReclaim(reclaim)
            }
        }
        kind::OOM_KILL => {
            let r: OomKillEvent = read(bytes, record_kind)?;
            Event::OomKill(OomKill {
                ts_ns: r.ts_ns,
                victim: r.victim.into(),
                invoker: r.invoker.into(),
                victim_memcg_id: r.victim_memcg_id,
                oom_memcg_id: if r.flags & oom_flags::OOM_MEMCG != 0 {
                    r.oom_memcg_id
                } else {
                    0
                },
                rss_pages: (r.flags & oom_flags::RSS != 0).then_some(RssPages {
                    anon: r.anon_rss_pages,
                    file: r.file_rss_pages,
                    shmem: r.shmem_rss_pages,
                }),
            })
        }
        kind::BRAKE => {
            let r: BrakeEvent = read(bytes, record_kind)?;
            Event::Brake(Brake {
                ts_ns: r.ts_ns,
                task: r.task.into(),
                rule_memcg_id: r.rule_memcg_id,
                signal: r.signal,
                throttled_ns: r.throttled_ns,
                limit_ns: r.limit_ns,
                heartbeat_age_ns: r.heartbeat_age_ns,
                result: r.result,
            })
        }
        other => return Err(DecodeError::UnknownKind(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_ebpf::TaskId;

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: T is a plain #[repr(C)] struct; reading its bytes is fine.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn task(pid: u32, comm: &str) -> TaskId {
        let mut c = [0u8; 16];
        c[..comm.len()].copy_from_slice(comm.as_bytes());
        TaskId {
            pid,
            tgid: pid,
            comm: c,
        }
    }

    #[test]
    fn throttle_end_decodes_every_field() {
        let raw = ThrottleEndEvent {
            kind: kind::THROTTLE_END,
            nr_pages: 64,
            ts_ns: 5_000,
            task: task(42, "hog"),
            memcg_id: 100,
            over_high_id: 90,
            start_ns: 1_000,
            reclaim_ns: 700,
            reclaimed_pages: 12,
        };
        let Event::Throttle(t) = decode(&bytes_of(&raw)).unwrap() else {
            panic!("wrong variant");
        };
        assert_eq!(t.task.pid, 42);
        assert_eq!(t.task.comm.to_string(), "hog");
        assert_eq!((t.memcg_id, t.over_high_id), (100, 90));
        assert_eq!(
            (t.duration_ns(), t.reclaim_ns, t.sleep_ns()),
            (4_000, 700, 3_300)
        );
        assert_eq!((t.nr_pages, t.reclaimed_pages), (64, 12));
    }

    #[test]
    fn reclaim_flags_and_kinds() {
        let mut raw = ReclaimEvent {
            kind: kind::RECLAIM,
            flags: reclaim_flags::IN_THROTTLE,
            ts_ns: 10,
            task: task(7, "x"),
            memcg_id: 3,
            start_ns: 4,
            nr_reclaimed: 32,
        };
        let Event::Reclaim(r) = decode(&bytes_of(&raw)).unwrap() else {
            panic!("wrong variant");
        };
        assert!(r.in_throttle && !r.memcg_exact);
        assert_eq!((r.duration_ns(), r.nr_reclaimed), (6, 32));
        raw.kind = kind::DIRECT_RECLAIM;
        raw.flags = reclaim_flags::MEMCG_EXACT;
        let Event::DirectReclaim(r) = decode(&bytes_of(&raw)).unwrap() else {
            panic!("wrong variant");
        };
        assert!(r.memcg_exact && !r.in_throttle);
    }

    #[test]
    fn oom_fields_follow_flags() {
        let raw = OomKillEvent {
            kind: kind::OOM_KILL,
            flags: oom_flags::VICTIM_TASK | oom_flags::RSS,
            ts_ns: 1,
            invoker: task(1, "a"),
            victim: task(2, "b"),
            victim_memcg_id: 9,
            oom_memcg_id: 8,
            anon_rss_pages: 100,
            file_rss_pages: 2,
            shmem_rss_pages: 1,
        };
        let Event::OomKill(o) = decode(&bytes_of(&raw)).unwrap() else {
            panic!("wrong variant");
        };
        // OOM_MEMCG flag unset: the id is not trusted.
        assert_eq!(o.oom_memcg_id, 0);
        assert_eq!(o.victim_memcg_id, 9);
        assert_eq!(o.rss_pages.unwrap().total(), 103);
    }

    #[test]
    fn short_unknown_and_empty_records_are_errors() {
        assert_eq!(decode(&[]), Err(DecodeError::NoKind(0)));
        assert_eq!(decode(&[1, 0]), Err(DecodeError::NoKind(2)));
        assert_eq!(
            decode(&99u32.to_ne_bytes()),
            Err(DecodeError::UnknownKind(99))
        );
        let short = kind::THROTTLE_END.to_ne_bytes();
        assert!(matches!(
            decode(&short),
            Err(DecodeError::Short { kind: 2, .. })
        ));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for len in 0..160 {
            for k in 0..=kind::COUNT {
                let mut buf: Vec<u8> = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        state as u8
                    })
                    .collect();
                if buf.len() >= 4 {
                    buf[..4].copy_from_slice(&k.to_ne_bytes());
                }
                let _ = decode(&buf);
            }
        }
    }
}
