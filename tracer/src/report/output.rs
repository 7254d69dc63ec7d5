//! Events as people and scripts read them: one text line, or one JSON
//! object per line. Cgroup ids become paths and names here, and monotonic
//! times become wall-clock times; nothing upstream deals with either.

use std::borrow::Cow;
use std::collections::HashMap;
use std::rc::Rc;

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::clock::{Clock, fmt_bytes, fmt_ns};
use crate::event::{Event, Task};
use crate::model::Hierarchy;

/// A cgroup's fields as JSON text: its path, its name and who it is,
/// serialised once and written as they are after that. An export names
/// the same few cgroups on millions of lines, and escaping their paths
/// (200 bytes for a Kubernetes pod) on every line was a third of its CPU.
#[derive(Debug)]
pub struct CgroupJson {
    path: Box<RawValue>,
    name: Box<RawValue>,
    who: Box<RawValue>,
}

impl CgroupJson {
    /// `null` for each field the lookup does not know.
    fn of(paths: &dyn Hierarchy, id: u64) -> Self {
        let path = paths.path(id);
        let who = paths.identity(id);
        Self {
            path: raw(&path.as_deref()),
            name: raw(&who.as_ref().map(|w| w.name())),
            who: raw(&who.as_deref()),
        }
    }
}

fn raw<T: Serialize + ?Sized>(v: &T) -> Box<RawValue> {
    // Paths, names and identities have string keys only, so this cannot
    // fail; null is the answer if it ever did.
    serde_json::value::to_raw_value(v).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// [`CgroupJson`] by cgroup id, for a lookup whose paths do not change
/// while it is used (a recording's tables; a live registry's do).
#[derive(Debug, Default)]
pub struct CgroupJsonCache(HashMap<u64, Rc<CgroupJson>>);

impl CgroupJsonCache {
    fn get(&mut self, paths: &dyn Hierarchy, id: u64) -> Rc<CgroupJson> {
        self.0
            .entry(id)
            .or_insert_with(|| Rc::new(CgroupJson::of(paths, id)))
            .clone()
    }
}

/// One event as a JSON object (see [`Presenter::json`]). The cgroup
/// fields are JSON already ([`CgroupJson`]).
#[derive(Debug, Serialize)]
pub struct EventLine<'e> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub ts: String,
    pub mono_ns: u64,
    /// The memory cgroup's path.
    pub cgroup: &'e RawValue,
    pub cgroup_id: u64,
    /// The cgroup's name for people (`t3-serve@wizard.service`).
    pub cgroup_name: &'e RawValue,
    /// Who the cgroup is: unit, user, container, pod.
    pub who: &'e RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tgid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<Cow<'e, str>>,
    #[serde(flatten)]
    pub detail: Detail<'e>,
}

/// The fields of each kind of event.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Detail<'e> {
    ThrottleStart {
        nr_pages: u32,
        over_high_cgroup: &'e RawValue,
        over_high_cgroup_id: u64,
        over_high_cgroup_name: &'e RawValue,
        over_high_usage_bytes: u64,
        over_high_limit_bytes: u64,
    },
    Throttle {
        start_mono_ns: u64,
        duration_ns: u64,
        reclaim_ns: u64,
        sleep_ns: u64,
        reclaimed_pages: u64,
        nr_pages: u32,
        over_high_cgroup: &'e RawValue,
        over_high_cgroup_id: u64,
        over_high_cgroup_name: &'e RawValue,
    },
    Reclaim {
        start_mono_ns: u64,
        duration_ns: u64,
        nr_reclaimed: u64,
        in_throttle: bool,
        cgroup_exact: bool,
    },
    OomKill {
        invoker_pid: u32,
        invoker_comm: Cow<'e, str>,
        oom_cgroup: &'e RawValue,
        oom_cgroup_id: u64,
        oom_cgroup_name: &'e RawValue,
        rss_bytes: Option<RssBytes>,
    },
    Brake {
        signal: u32,
        throttled_ns: u64,
        limit_ns: u64,
        heartbeat_age_ns: u64,
        result: i64,
    },
    Lost {
        lost_type: &'static str,
        count: u64,
    },
}

#[derive(Debug, Serialize)]
pub struct RssBytes {
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
    pub total: u64,
}

/// The cgroup an event names besides its own: the one over memory.high
/// (throttling), the one whose limit ran out (an OOM kill).
fn other_cgroup(e: &Event) -> Option<u64> {
    match e {
        Event::ThrottleStart(s) => Some(s.over_high_id),
        Event::Throttle(t) => Some(t.over_high_id),
        Event::OomKill(o) => Some(o.oom_memcg_id),
        Event::Reclaim(_) | Event::DirectReclaim(_) | Event::Brake(_) | Event::Lost(_) => None,
    }
}

/// Turns events into lines. Paths come from a lookup (the live registry,
/// with the event's ids resolved beforehand, or a recording's tables).
pub struct Presenter<'a> {
    pub paths: &'a dyn Hierarchy,
    pub clock: Clock,
    pub page_size: u64,
}

impl Presenter<'_> {
    fn path(&self, id: u64) -> Option<String> {
        self.paths.path(id).map(|p| p.to_string())
    }

    /// The cgroup's name for people, None if unknown.
    fn name(&self, id: u64) -> Option<String> {
        self.paths.identity(id).map(|n| n.name().to_string())
    }

    /// One JSON object: `type`, `ts` (RFC 3339), `mono_ns`, `cgroup` (the
    /// memory cgroup's path, null if unknown), `cgroup_id`, `cgroup_name`
    /// and `who` (who the cgroup is: unit, user, container, pod), task
    /// fields where the event has a task, then the event's own fields
    /// (every other cgroup with its `_name`).
    pub fn json(&self, e: &Event) -> Value {
        let main = CgroupJson::of(self.paths, e.memcg_id());
        let other = other_cgroup(e).map(|id| CgroupJson::of(self.paths, id));
        let line = self.line(e, &main, other.as_ref().unwrap_or(&main));
        serde_json::to_value(line).unwrap_or(Value::Null)
    }

    /// The same object as one line of JSON text appended to `out`, each
    /// cgroup's fields serialised once per `cgroups` (what `export
    /// --format jsonl` writes).
    pub fn write_json(
        &self,
        e: &Event,
        cgroups: &mut CgroupJsonCache,
        out: &mut Vec<u8>,
    ) -> serde_json::Result<()> {
        let main = cgroups.get(self.paths, e.memcg_id());
        let other = other_cgroup(e).map(|id| cgroups.get(self.paths, id));
        let line = self.line(e, &main, other.as_deref().unwrap_or(&main));
        serde_json::to_writer(&mut *out, &line)?;
        out.push(b'\n');
        Ok(())
    }

    /// The object, typed, with the event's memory cgroup (`main`) and the
    /// other cgroup it names (`other`: the one over memory.high, the OOM's).
    fn line<'e>(&self, e: &'e Event, main: &'e CgroupJson, other: &'e CgroupJson) -> EventLine<'e> {
        let page = self.page_size;
        let detail = match e {
            Event::ThrottleStart(s) => Detail::ThrottleStart {
                nr_pages: s.nr_pages,
                over_high_cgroup: &other.path,
                over_high_cgroup_id: s.over_high_id,
                over_high_cgroup_name: &other.name,
                over_high_usage_bytes: s.over_high_usage_pages.saturating_mul(page),
                over_high_limit_bytes: s.over_high_limit_pages.saturating_mul(page),
            },
            Event::Throttle(t) => Detail::Throttle {
                start_mono_ns: t.start_ns,
                duration_ns: t.duration_ns(),
                reclaim_ns: t.reclaim_ns,
                sleep_ns: t.sleep_ns(),
                reclaimed_pages: t.reclaimed_pages,
                nr_pages: t.nr_pages,
                over_high_cgroup: &other.path,
                over_high_cgroup_id: t.over_high_id,
                over_high_cgroup_name: &other.name,
            },
            Event::Reclaim(r) | Event::DirectReclaim(r) => Detail::Reclaim {
                start_mono_ns: r.start_ns,
                duration_ns: r.duration_ns(),
                nr_reclaimed: r.nr_reclaimed,
                in_throttle: r.in_throttle,
                cgroup_exact: r.memcg_exact,
            },
            Event::OomKill(o) => Detail::OomKill {
                invoker_pid: o.invoker.pid,
                invoker_comm: o.invoker.comm.to_str_lossy(),
                oom_cgroup: &other.path,
                oom_cgroup_id: o.oom_memcg_id,
                oom_cgroup_name: &other.name,
                rss_bytes: o.rss_pages.map(|r| RssBytes {
                    anon: r.anon.saturating_mul(page),
                    file: r.file.saturating_mul(page),
                    shmem: r.shmem.saturating_mul(page),
                    total: r.total().saturating_mul(page),
                }),
            },
            Event::Brake(b) => Detail::Brake {
                signal: b.signal,
                throttled_ns: b.throttled_ns,
                limit_ns: b.limit_ns,
                heartbeat_age_ns: b.heartbeat_age_ns,
                result: b.result,
            },
            Event::Lost(l) => Detail::Lost {
                lost_type: l.kind.as_str(),
                count: l.count,
            },
        };
        let task = e.task();
        EventLine {
            kind: e.type_name(),
            ts: self.clock.rfc3339(e.ts_ns()),
            mono_ns: e.ts_ns(),
            cgroup: &main.path,
            cgroup_id: e.memcg_id(),
            cgroup_name: &main.name,
            who: &main.who,
            pid: task.map(|t| t.pid),
            tgid: task.map(|t| t.tgid),
            comm: task.map(|t| t.comm.to_str_lossy()),
            detail,
        }
    }

    /// One aligned text line: time, type, who the cgroup is, what
    /// happened, and the cgroup's path at the end (`cgroup=`).
    pub fn text(&self, e: &Event) -> String {
        // UTC, marked as such.
        let when = format!("{}Z", self.clock.hms(e.ts_ns()));
        let id = e.memcg_id();
        let path = self.path(id);
        let name = self.name(id).or_else(|| path.clone()).unwrap_or_else(|| {
            if id == 0 {
                "-".into()
            } else {
                format!("#{id}")
            }
        });
        let who = |t: &Task| format!("{}[{}]", t.comm, t.tgid);
        let page = self.page_size;
        let detail = match e {
            Event::ThrottleStart(s) => format!(
                "{} enters throttle, {} pages over high{}",
                who(&s.task),
                s.nr_pages,
                self.over_high(s.over_high_id)
            ),
            Event::Throttle(t) => format!(
                "{} throttled {} (reclaim {}, sleep {}){}",
                who(&t.task),
                fmt_ns(t.duration_ns()),
                fmt_ns(t.reclaim_ns),
                fmt_ns(t.sleep_ns()),
                self.over_high(t.over_high_id)
            ),
            Event::Reclaim(r) | Event::DirectReclaim(r) => format!(
                "{} reclaimed {} in {}{}",
                who(&r.task),
                fmt_bytes(r.nr_reclaimed.saturating_mul(page)),
                fmt_ns(r.duration_ns()),
                if r.in_throttle {
                    " (inside throttle)"
                } else {
                    ""
                }
            ),
            Event::OomKill(o) => {
                let rss = o
                    .rss_pages
                    .map(|r| format!(" rss {}", fmt_bytes(r.total().saturating_mul(page))))
                    .unwrap_or_default();
                let ran_out = match self.name(o.oom_memcg_id) {
                    Some(p) => format!(", {p} ran out"),
                    None => String::new(),
                };
                format!(
                    "killed {}{rss} (invoked by {}){ran_out}",
                    who(&o.victim),
                    who(&o.invoker)
                )
            }
            Event::Brake(b) => format!(
                "kernel brake sent signal {} to {} after {} throttled (limit {}), agent silent {}",
                b.signal,
                who(&b.task),
                fmt_ns(b.throttled_ns),
                fmt_ns(b.limit_ns),
                fmt_ns(b.heartbeat_age_ns)
            ),
            Event::Lost(l) => format!(
                "{} {} records lost (ring buffer full)",
                l.count,
                l.kind.as_str()
            ),
        };
        let at = path.map(|p| format!("  cgroup={p}")).unwrap_or_default();
        format!("{when} {:<14} {name:<28} {detail}{at}", e.type_name())
    }

    fn over_high(&self, id: u64) -> String {
        match self.name(id) {
            Some(p) => format!(", over high: {p}"),
            None => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Comm, Lost, LostKind, OomKill, RssPages, Throttle};
    use crate::sys::registry::CgroupRegistry;

    fn presenter(reg: &CgroupRegistry) -> Presenter<'_> {
        Presenter {
            paths: reg,
            clock: Clock { offset_ns: 0 },
            page_size: 4096,
        }
    }

    fn task() -> Task {
        Task {
            pid: 11,
            tgid: 10,
            comm: Comm::new("hog"),
        }
    }

    #[test]
    fn throttle_json_has_the_documented_fields() {
        let reg = CgroupRegistry::new(None);
        let p = presenter(&reg);
        let e = Event::Throttle(Throttle {
            ts_ns: 3_000_000_000,
            start_ns: 1_000_000_000,
            task: task(),
            memcg_id: 0,
            over_high_id: 0,
            reclaim_ns: 500,
            reclaimed_pages: 1,
            nr_pages: 32,
        });
        let v = p.json(&e);
        assert_eq!(v["type"], "throttle");
        assert_eq!(v["ts"], "1970-01-01T00:00:03.000000000Z");
        assert!(p.text(&e).starts_with("00:00:03.000Z "), "{}", p.text(&e));
        assert_eq!(v["cgroup"], Value::Null);
        assert_eq!(
            (v["pid"].as_u64(), v["tgid"].as_u64()),
            (Some(11), Some(10))
        );
        assert_eq!(v["comm"], "hog");
        assert_eq!(v["duration_ns"], 2_000_000_000u64);
        assert_eq!(v["sleep_ns"], 2_000_000_000u64 - 500);
        let line = p.text(&e);
        assert!(line.contains("hog[10] throttled 2.000s"), "{line}");
    }

    #[test]
    fn names_in_json_and_text() {
        let unit = r"/system.slice/system-t3\x2dserve.slice/t3-serve@wizard.service";
        let reg =
            CgroupRegistry::from_paths([(7, unit), (8, "/system.slice/system-t3\\x2dserve.slice")]);
        let p = presenter(&reg);
        let e = Event::Throttle(Throttle {
            ts_ns: 3_000_000_000,
            start_ns: 1_000_000_000,
            task: task(),
            memcg_id: 7,
            over_high_id: 7,
            reclaim_ns: 500,
            reclaimed_pages: 1,
            nr_pages: 32,
        });
        let v = p.json(&e);
        assert_eq!(v["cgroup"], unit);
        assert_eq!(v["cgroup_name"], "t3-serve@wizard.service");
        assert_eq!(v["who"]["kind"], "service");
        assert_eq!(v["who"]["slice"], "system-t3-serve.slice");
        assert_eq!(v["over_high_cgroup_name"], "t3-serve@wizard.service");
        let line = p.text(&e);
        assert!(
            line.contains("throttle       t3-serve@wizard.service ")
                && line.contains("over high: t3-serve@wizard.service")
                && line.ends_with(&format!("  cgroup={unit}")),
            "{line}"
        );
    }

    #[test]
    fn oom_and_lost_json() {
        let reg = CgroupRegistry::new(None);
        let p = presenter(&reg);
        let o = p.json(&Event::OomKill(OomKill {
            ts_ns: 1,
            victim: task(),
            invoker: task(),
            victim_memcg_id: 0,
            oom_memcg_id: 0,
            rss_pages: Some(RssPages {
                anon: 2,
                file: 1,
                shmem: 0,
            }),
        }));
        assert_eq!(o["type"], "oom_kill");
        assert_eq!(o["pid"], 11);
        assert_eq!(o["rss_bytes"]["total"], 3 * 4096);
        let l = p.json(&Event::Lost(Lost {
            ts_ns: 1,
            kind: LostKind::Reclaim,
            count: 5,
        }));
        assert_eq!(
            (l["type"].as_str(), l["lost_type"].as_str()),
            (Some("lost"), Some("reclaim"))
        );
        assert!(l.get("pid").is_none());
    }
}
