//! Names: who a cgroup path belongs to, in words a person recognises.
//!
//! At 3 a.m. nobody thinks in cgroup paths. This stage turns a path of the
//! memory hierarchy, as [`crate::registry`] spells it (relative to the
//! mount, `/` the root), into an [`Identity`]: the systemd unit and its
//! slice, unescaped (`system-t3\x2dserve.slice` reads
//! `system-t3-serve.slice`), template and instance; the uid and session of
//! a user's cgroups; the container id and runtime (Docker, containerd,
//! CRI-O, Podman); the Kubernetes pod UID and QoS class, under either cgroup
//! driver; and a short [`Identity::name`] with a [`Identity::kind`].
//!
//! **What it owns.** Names that the path itself tells, nothing more.
//! [`identify`] is pure: no I/O, no clock, no state, the same answer for
//! the same path on any host, so a recording names its cgroups as the live
//! agent did. It is total: garbage, hostile or truncated input never panics
//! and yields [`Kind::Other`] named after its last segment. The rules per
//! family live in `systemd`, `containers` and `kubernetes`.
//!
//! **What it does not.** Anything the path does not say: user names from
//! uids, container names from the Docker or Podman sockets, pod names and
//! namespaces from the runtime's state. That enrichment is I/O; it happens
//! on a thread of its own (`crate::sys::enrich`), cached, and never on the
//! kill path. It meets this stage in [`Known`]: what it learned, keyed by
//! what the path names (a uid, a container id, a pod UID), which
//! [`Known::apply`] lays over an identity. Metric label values stay those
//! of the path (see [`Identity::labels`]), with the namespace the one
//! exception (empty until known), so enrichment never adds a series.
//!
//! **Where it meets the next stage.** Views (`top`, `replay`, `report`)
//! show `name()` and `kind()`; alerts and the kill log serialize the whole
//! `Identity` as JSON (absent fields are left out); metrics take
//! [`Identity::labels`]; budgets select by name with [`NameGlob`] as they
//! select by path with [`crate::filter`]. A caller builds one `Identity`
//! per cgroup when the registry first learns its path and keeps it beside
//! the path: construction allocates, every lookup after it only borrows.

mod containers;
mod glob;
mod identity;
mod known;
mod kubernetes;
mod systemd;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;

pub use containers::Runtime;
pub use glob::{NameField, NameGlob};
pub use identity::Identity;
/// For the registry's churn test: how many facts a table keeps.
#[cfg(test)]
pub(crate) use known::MAX_ENTRIES;
pub use known::{Ask, ContainerNames, Known, Learned, Named, PodNames};
pub use kubernetes::QosClass;
pub use systemd::unescape;

use containers::ContainerSeg;
use identity::{NameAnchor, OWN_UNIT};
use kubernetes::KubeSeg;
use systemd::{Unit, UnitType};

/// The longest display name, label value or enrichment value kept, in
/// bytes (a cgroup directory name, like a unit name, is at most 255).
pub const MAX_NAME_LEN: usize = 255;

/// What kind of cgroup a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `/`.
    Root,
    Slice,
    Service,
    Scope,
    /// A login session's scope, `session-3.scope`.
    Session,
    /// A user's service manager, `user@1000.service`.
    UserManager,
    Socket,
    Mount,
    Swap,
    /// A container's own cgroup.
    Container,
    /// A container's monitor (conmon), `crio-conmon-<id>.scope`.
    ContainerMonitor,
    /// A pod's own cgroup.
    Pod,
    /// Below a unit, container or pod, in a cgroup of its own making.
    Subgroup,
    /// Nothing the path says is recognised.
    Other,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Root => "root",
            Kind::Slice => "slice",
            Kind::Service => "service",
            Kind::Scope => "scope",
            Kind::Session => "session",
            Kind::UserManager => "user_manager",
            Kind::Socket => "socket",
            Kind::Mount => "mount",
            Kind::Swap => "swap",
            Kind::Container => "container",
            Kind::ContainerMonitor => "container_monitor",
            Kind::Pod => "pod",
            Kind::Subgroup => "subgroup",
            Kind::Other => "other",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Characters a name must not carry as themselves into a terminal, a log
/// line or an alert: control characters and the invisible ones that
/// reorder or hide text.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// `s` with such characters escaped (`\x1b`, `\u{202e}`).
fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !needs_escape(c) {
            out.push(c);
        } else if (c as u32) < 0x100 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    Cow::Owned(out)
}

/// An enrichment value as kept: printable, bounded, `None` when empty.
fn clean(v: Option<&str>) -> Option<String> {
    v.map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| bounded(printable(v).into_owned()))
}

/// At most [`MAX_NAME_LEN`] bytes, cut at a character boundary with `…`.
fn bounded(mut s: String) -> String {
    if s.len() <= MAX_NAME_LEN {
        return s;
    }
    let mut end = MAX_NAME_LEN - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    s
}

/// A systemd name, readable and safe to print.
fn readable(escaped: &str) -> String {
    bounded(printable(&unescape(escaped)).into_owned())
}

fn unit_kind(unit: &Unit<'_>) -> Kind {
    match unit.ty {
        UnitType::Slice => Kind::Slice,
        UnitType::Service if systemd::user_manager_uid(unit).is_some() => Kind::UserManager,
        UnitType::Service => Kind::Service,
        UnitType::Scope if systemd::session_id(unit).is_some() => Kind::Session,
        UnitType::Scope => Kind::Scope,
        UnitType::Socket => Kind::Socket,
        UnitType::Mount => Kind::Mount,
        UnitType::Swap => Kind::Swap,
    }
}

/// What each family found on the path; the innermost finding wins.
#[derive(Default)]
struct Scan<'a> {
    /// (segment index, unit, whether that segment is a container or pod).
    unit: Option<(usize, Unit<'a>, bool)>,
    container: Option<(usize, ContainerSeg<'a>)>,
    pod: Option<(usize, String)>,
    qos: Option<QosClass>,
    uid: Option<u32>,
    session: Option<&'a str>,
}

impl<'a> Scan<'a> {
    fn kube(&mut self, i: usize, seg: KubeSeg) -> bool {
        match seg {
            KubeSeg::Pod { uid, qos } => {
                self.pod = Some((i, uid));
                self.qos = Some(qos);
                true
            }
            KubeSeg::Qos(qos) => {
                self.qos = Some(qos);
                false
            }
        }
    }

    fn segment(&mut self, i: usize, seg: &'a str, parent: Option<&'a str>) {
        let unit = systemd::parse_unit(seg);
        let mut workload = false;
        if let Some(u) = &unit {
            match u.ty {
                UnitType::Slice => {
                    if let Some(uid) = systemd::user_slice_uid(u) {
                        self.uid = Some(uid);
                    }
                    if let Some(k) = kubernetes::parse_slice(u.prefix) {
                        workload |= self.kube(i, k);
                    }
                }
                UnitType::Service => {
                    if let Some(uid) = systemd::user_manager_uid(u) {
                        self.uid = Some(uid);
                    }
                }
                UnitType::Scope => {
                    if let Some(s) = systemd::session_id(u) {
                        self.session = Some(s);
                    }
                }
                UnitType::Socket | UnitType::Mount | UnitType::Swap => {}
            }
        }
        if let Some(c) = containers::parse(seg, parent) {
            self.container = Some((i, c));
            workload = true;
        } else if let Some(k) = kubernetes::parse_cgroupfs(seg, parent) {
            self.kube(i, k);
        } else if let Some((slice, rest)) = seg.split_once(':') {
            // `kubepods-burstable-pod<uid>.slice:cri-containerd:<id>`
            if let Some((prefix, id)) = rest.split_once(':')
                && let Some(c) = containers::parse_cgroups_path(prefix, id)
            {
                self.container = Some((i, c));
                if let Some(k) = slice
                    .strip_suffix(".slice")
                    .and_then(kubernetes::parse_slice)
                {
                    self.kube(i, k);
                }
            }
        }
        if let Some(u) = unit {
            self.unit = Some((i, u, workload));
        }
    }
}

/// A cgroup path for people, from the path alone: `<name> (<path>)`, or
/// the path when its name says nothing more ([`Identity::describe`]).
pub fn describe(path: &str) -> String {
    identify(path).describe(path)
}

/// What the display name is taken from.
enum Anchor<'s, 'a> {
    Unit(&'s Unit<'a>),
    Pod,
    Container(&'s ContainerSeg<'a>),
}

/// The identity of a cgroup path (see the module doc). Pure and total.
pub fn identify(path: &str) -> Identity {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let Some(last) = segs.len().checked_sub(1) else {
        return Identity::root();
    };
    let mut scan = Scan::default();
    for (i, seg) in segs.iter().enumerate() {
        let parent = i.checked_sub(1).map(|p| segs[p]);
        scan.segment(i, seg, parent);
    }

    let mut id = Identity::root();
    id.uid = scan.uid;
    id.session = scan.session.map(str::to_string);
    id.qos = scan.qos;
    if let Some((i, u, workload)) = &scan.unit {
        let readable_name = readable(u.name);
        if readable_name != u.name {
            id.unit_escaped = Some(u.name.to_string());
        }
        id.unit = Some(readable_name);
        id.template = systemd::template(u).map(|t| readable(&t));
        id.instance = u.instance.map(readable);
        id.unit_is_workload = *workload;
        if *i == last {
            id.own |= OWN_UNIT;
        }
        let parent_slice = i
            .checked_sub(1)
            .and_then(|p| systemd::parse_unit(segs[p]))
            .filter(|p| p.ty == UnitType::Slice);
        if let Some(s) = parent_slice {
            let readable_slice = readable(s.name);
            if readable_slice != s.name {
                id.slice_escaped = Some(s.name.to_string());
            }
            id.slice = Some(readable_slice);
        }
    }
    if let Some((_, c)) = &scan.container {
        id.container_id = Some(c.id.to_string());
        id.runtime = c.runtime;
    }
    if let Some((_, uid)) = &scan.pod {
        id.pod_uid = Some(uid.clone());
    }

    // The innermost finding names the cgroup; at one segment a container
    // outranks a pod, a pod its slice's unit name.
    let mut anchor: Option<(usize, Anchor<'_, '_>)> = None;
    if let Some((i, u, _)) = &scan.unit {
        anchor = Some((*i, Anchor::Unit(u)));
    }
    if let Some((i, _)) = &scan.pod
        && anchor.as_ref().is_none_or(|(j, _)| i >= j)
    {
        anchor = Some((*i, Anchor::Pod));
    }
    if let Some((i, c)) = &scan.container
        && anchor.as_ref().is_none_or(|(j, _)| i >= j)
    {
        anchor = Some((*i, Anchor::Container(c)));
    }

    let tail = || printable(segs[last]).into_owned();
    match anchor {
        None => {
            id.kind = Kind::Other;
            id.below = Some(tail());
        }
        Some((i, a)) => {
            let (kind, anchor) = match a {
                Anchor::Unit(u) => (unit_kind(u), NameAnchor::Unit),
                Anchor::Pod => (Kind::Pod, NameAnchor::Pod),
                Anchor::Container(c) if c.monitor => (Kind::ContainerMonitor, NameAnchor::Monitor),
                Anchor::Container(_) => (Kind::Container, NameAnchor::Container),
            };
            id.anchor = anchor;
            if i == last {
                id.kind = kind;
            } else {
                id.kind = Kind::Subgroup;
                id.below = Some(tail());
            }
        }
    }
    id.rename();
    id
}
