//! Events as people and scripts read them: one text line, or one JSON
//! object per line. Cgroup ids become paths and names here, and monotonic
//! times become wall-clock times; nothing upstream deals with either.

use serde_json::{Map, Value, json};

use crate::clock::{Clock, fmt_bytes, fmt_ns};
use crate::event::{Event, Task};
use crate::model::Hierarchy;

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

    fn path_value(&self, id: u64) -> Value {
        self.path(id).map_or(Value::Null, Value::String)
    }

    /// The cgroup's name for people, null if unknown.
    fn name_value(&self, id: u64) -> Value {
        self.paths
            .identity(id)
            .map_or(Value::Null, |n| Value::String(n.name().to_string()))
    }

    /// One JSON object: `type`, `ts` (RFC 3339), `mono_ns`, `cgroup` (the
    /// memory cgroup's path, null if unknown), `cgroup_id`, `cgroup_name`
    /// and `who` (who the cgroup is: unit, user, container, pod), task
    /// fields where the event has a task, then the event's own fields
    /// (every other cgroup with its `_name`).
    pub fn json(&self, e: &Event) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), json!(e.type_name()));
        m.insert("ts".into(), json!(self.clock.rfc3339(e.ts_ns())));
        m.insert("mono_ns".into(), json!(e.ts_ns()));
        let id = e.memcg_id();
        m.insert("cgroup".into(), self.path_value(id));
        m.insert("cgroup_id".into(), json!(id));
        let who = self.paths.identity(id);
        m.insert(
            "cgroup_name".into(),
            who.as_ref()
                .map_or(Value::Null, |n| Value::String(n.name().to_string())),
        );
        m.insert(
            "who".into(),
            who.map_or(Value::Null, |n| {
                serde_json::to_value(&*n).unwrap_or(Value::Null)
            }),
        );
        if let Some(t) = e.task() {
            m.insert("pid".into(), json!(t.pid));
            m.insert("tgid".into(), json!(t.tgid));
            m.insert("comm".into(), json!(t.comm.to_string()));
        }
        let page = self.page_size;
        match e {
            Event::ThrottleStart(s) => {
                m.insert("nr_pages".into(), json!(s.nr_pages));
                m.insert("over_high_cgroup".into(), self.path_value(s.over_high_id));
                m.insert("over_high_cgroup_id".into(), json!(s.over_high_id));
                m.insert(
                    "over_high_cgroup_name".into(),
                    self.name_value(s.over_high_id),
                );
                m.insert(
                    "over_high_usage_bytes".into(),
                    json!(s.over_high_usage_pages.saturating_mul(page)),
                );
                m.insert(
                    "over_high_limit_bytes".into(),
                    json!(s.over_high_limit_pages.saturating_mul(page)),
                );
            }
            Event::Throttle(t) => {
                m.insert("start_mono_ns".into(), json!(t.start_ns));
                m.insert("duration_ns".into(), json!(t.duration_ns()));
                m.insert("reclaim_ns".into(), json!(t.reclaim_ns));
                m.insert("sleep_ns".into(), json!(t.sleep_ns()));
                m.insert("reclaimed_pages".into(), json!(t.reclaimed_pages));
                m.insert("nr_pages".into(), json!(t.nr_pages));
                m.insert("over_high_cgroup".into(), self.path_value(t.over_high_id));
                m.insert("over_high_cgroup_id".into(), json!(t.over_high_id));
                m.insert(
                    "over_high_cgroup_name".into(),
                    self.name_value(t.over_high_id),
                );
            }
            Event::Reclaim(r) | Event::DirectReclaim(r) => {
                m.insert("start_mono_ns".into(), json!(r.start_ns));
                m.insert("duration_ns".into(), json!(r.duration_ns()));
                m.insert("nr_reclaimed".into(), json!(r.nr_reclaimed));
                m.insert("in_throttle".into(), json!(r.in_throttle));
                m.insert("cgroup_exact".into(), json!(r.memcg_exact));
            }
            Event::OomKill(o) => {
                m.insert("invoker_pid".into(), json!(o.invoker.pid));
                m.insert("invoker_comm".into(), json!(o.invoker.comm.to_string()));
                m.insert("oom_cgroup".into(), self.path_value(o.oom_memcg_id));
                m.insert("oom_cgroup_id".into(), json!(o.oom_memcg_id));
                m.insert("oom_cgroup_name".into(), self.name_value(o.oom_memcg_id));
                m.insert(
                    "rss_bytes".into(),
                    o.rss_pages.map_or(Value::Null, |r| {
                        json!({
                            "anon": r.anon.saturating_mul(page),
                            "file": r.file.saturating_mul(page),
                            "shmem": r.shmem.saturating_mul(page),
                            "total": r.total().saturating_mul(page),
                        })
                    }),
                );
            }
            Event::Brake(b) => {
                m.insert("signal".into(), json!(b.signal));
                m.insert("throttled_ns".into(), json!(b.throttled_ns));
                m.insert("limit_ns".into(), json!(b.limit_ns));
                m.insert("heartbeat_age_ns".into(), json!(b.heartbeat_age_ns));
                m.insert("result".into(), json!(b.result));
            }
            Event::Lost(l) => {
                m.insert("lost_type".into(), json!(l.kind.as_str()));
                m.insert("count".into(), json!(l.count));
            }
        }
        Value::Object(m)
    }

    /// A cgroup's name for a line, or its path when it has no better name.
    fn short(&self, id: u64) -> Option<String> {
        self.paths.identity(id).map(|n| n.name().to_string())
    }

    /// One aligned text line: time, type, who the cgroup is, what
    /// happened, and the cgroup's path at the end (`cgroup=`).
    pub fn text(&self, e: &Event) -> String {
        // UTC, marked as such.
        let when = format!("{}Z", self.clock.hms(e.ts_ns()));
        let id = e.memcg_id();
        let path = self.path(id);
        let name = self.short(id).or_else(|| path.clone()).unwrap_or_else(|| {
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
                let ran_out = match self.short(o.oom_memcg_id) {
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
        match self.short(id) {
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
