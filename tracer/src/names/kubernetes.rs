//! The kubelet's names in cgroup paths: QoS classes and pods.
//!
//! The kubelet parents pods under `kubepods` (below `--cgroup-root`):
//! Guaranteed pods directly, Burstable and BestEffort ones under a cgroup
//! per class, each pod in `pod<UID>`, its containers below. With the
//! cgroupfs driver those are plain directories
//! (`/kubepods/burstable/pod<UID>/<container id>`); with the systemd driver
//! each is a slice whose name repeats its ancestors, and the UID's `-`s are
//! `_`s because `-` separates a slice from its parent
//! (`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<UID_>.slice`).
//! A kubelet whose cgroup root is itself a slice (kind, minikube:
//! `kubelet.slice`) prefixes every name (`kubelet-kubepods-…`).

use serde::Serialize;

/// A pod's QoS class, spelled as the API spells `status.qosClass`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

/// What a kubelet-made segment is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum KubeSeg {
    Pod { uid: String, qos: QosClass },
    Qos(QosClass),
}

/// The class of the pods a parent holds: `kubepods` holds Guaranteed pods.
fn class_of(parent: &str) -> Option<QosClass> {
    match parent {
        "kubepods" => Some(QosClass::Guaranteed),
        "burstable" => Some(QosClass::Burstable),
        "besteffort" => Some(QosClass::BestEffort),
        _ => None,
    }
}

/// A pod UID as the path spells it (`_` for `-` under systemd) → with `-`.
/// UIDs are UUIDs, or 32 hex digits (a static pod's manifest hash).
fn pod_uid(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_')
        && s.bytes().any(|b| b.is_ascii_hexdigit());
    ok.then(|| s.replace('_', "-"))
}

/// A slice name without `.slice`, systemd driver: `kubepods-burstable-pod<uid>`,
/// `kubepods-pod<uid>`, `kubepods-besteffort`.
pub(super) fn parse_slice(stem: &str) -> Option<KubeSeg> {
    let mut parts = stem.rsplit('-');
    let last = parts.next()?;
    let prev = parts.next()?;
    if let Some(uid) = last.strip_prefix("pod") {
        let qos = class_of(prev)?;
        return Some(KubeSeg::Pod {
            uid: pod_uid(uid)?,
            qos,
        });
    }
    match (prev, class_of(last)) {
        ("kubepods", Some(qos)) if qos != QosClass::Guaranteed => Some(KubeSeg::Qos(qos)),
        _ => None,
    }
}

/// A directory, cgroupfs driver: `pod<uid>` under `kubepods`, `burstable`
/// or `besteffort`; `burstable` or `besteffort` under `kubepods`.
pub(super) fn parse_cgroupfs(segment: &str, parent: Option<&str>) -> Option<KubeSeg> {
    let parent = parent?;
    if let Some(uid) = segment.strip_prefix("pod") {
        let qos = class_of(parent)?;
        return Some(KubeSeg::Pod {
            uid: pod_uid(uid)?,
            qos,
        });
    }
    match (parent, class_of(segment)) {
        ("kubepods", Some(qos)) if qos != QosClass::Guaranteed => Some(KubeSeg::Qos(qos)),
        _ => None,
    }
}
