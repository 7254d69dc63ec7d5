//! The event stream: ring buffer → decode → typed events, asynchronously.
//!
//! [`EventSource`] owns the two ring buffers (`EVENTS`: throttle episodes,
//! OOM kills, the brake; `RECLAIM_EVENTS`: reclaim passes) and the `LOST`
//! counters. It waits for either ring's fd to become readable (tokio
//! `AsyncFd`), drains and decodes every record, `EVENTS` first, and once a
//! second turns new reservation failures into [`Event::Lost`] events, so
//! lost data is always reported, never silently dropped.

use std::collections::VecDeque;
use std::time::Duration;

use aya::maps::{MapData, PerCpuArray, RingBuf};
use tokio::io::unix::AsyncFd;

use crate::clock::mono_now_ns;
use crate::event::{Event, Lost, LostKind};
use crate::probe::{LoadError, Tracer, error_chain};
use crate::ring::decode::decode;

/// How often the lost-event counters are read.
pub const LOST_POLL: Duration = Duration::from_secs(1);

pub struct EventSource {
    ring: AsyncFd<RingBuf<MapData>>,
    reclaim: AsyncFd<RingBuf<MapData>>,
    lost: PerCpuArray<MapData, u64>,
    lost_seen: [u64; tracer_ebpf::kind::COUNT as usize],
    pending: VecDeque<Event>,
    lost_tick: tokio::time::Interval,
    /// Records that did not decode (a kernel/user ABI mismatch).
    pub decode_errors: u64,
    /// Records decoded so far.
    pub records: u64,
}

impl EventSource {
    /// Takes the ring buffer and lost counters out of a loaded tracer.
    /// Must be called inside a tokio runtime.
    pub fn new(tracer: &mut Tracer) -> Result<Self, LoadError> {
        let ebpf = tracer.ebpf_mut();
        let mut ring = |name: &str| -> Result<AsyncFd<RingBuf<MapData>>, LoadError> {
            let map = ebpf
                .take_map(name)
                .ok_or_else(|| LoadError::Load(format!("{name} map missing")))?;
            let ring = RingBuf::try_from(map).map_err(|e| LoadError::Load(error_chain(&e)))?;
            // SAFETY: the RingBuf owns its map fd, which stays open for as
            // long as the AsyncFd that owns the RingBuf.
            unsafe { AsyncFd::register(ring) }.map_err(|e| LoadError::Load(e.to_string()))
        };
        let events = ring("EVENTS")?;
        let reclaim = ring("RECLAIM_EVENTS")?;
        let lost = ebpf
            .take_map("LOST")
            .ok_or_else(|| LoadError::Load("LOST map missing".into()))?;
        let lost = PerCpuArray::try_from(lost).map_err(|e| LoadError::Load(error_chain(&e)))?;
        let mut lost_tick = tokio::time::interval(LOST_POLL);
        lost_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Self {
            ring: events,
            reclaim,
            lost,
            lost_seen: [0; tracer_ebpf::kind::COUNT as usize],
            pending: VecDeque::with_capacity(4096),
            lost_tick,
            decode_errors: 0,
            records: 0,
        })
    }

    /// The next event, waiting for one.
    pub async fn next(&mut self) -> Event {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return e;
            }
            tokio::select! {
                guard = self.ring.readable_mut() => {
                    match guard {
                        Ok(mut guard) => {
                            guard.clear_ready();
                            self.drain();
                        }
                        Err(e) => {
                            log::error!("event ring buffer poll failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                guard = self.reclaim.readable_mut() => {
                    match guard {
                        Ok(mut guard) => {
                            guard.clear_ready();
                            self.drain();
                        }
                        Err(e) => {
                            log::error!("reclaim ring buffer poll failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                _ = self.lost_tick.tick() => self.poll_lost(),
            }
        }
    }

    /// The next event already drained, without waiting.
    pub fn try_next(&mut self) -> Option<Event> {
        self.pending.pop_front()
    }

    /// Moves every record of both rings into the pending queue, the
    /// decisive ring first.
    pub fn drain(&mut self) {
        for ring in [self.ring.get_mut(), self.reclaim.get_mut()] {
            while let Some(item) = ring.next() {
                match decode(&item) {
                    Ok(e) => {
                        self.records += 1;
                        self.pending.push_back(e);
                    }
                    Err(e) => {
                        self.decode_errors += 1;
                        if self.decode_errors <= 10 {
                            log::warn!("undecodable record ({} bytes): {e}", item.len());
                        }
                    }
                }
            }
        }
    }

    /// Reads the per-CPU lost counters and queues a [`Event::Lost`] for
    /// every kind that grew.
    pub fn poll_lost(&mut self) {
        let now = mono_now_ns();
        for k in 0..tracer_ebpf::kind::COUNT {
            let Ok(per_cpu) = self.lost.get(&k, 0) else {
                continue;
            };
            let total: u64 = per_cpu.iter().sum();
            let seen = &mut self.lost_seen[k as usize];
            if total > *seen {
                self.pending.push_back(Event::Lost(Lost {
                    ts_ns: now,
                    kind: LostKind::from_raw(k),
                    count: total - *seen,
                }));
                *seen = total;
            }
        }
    }
}
