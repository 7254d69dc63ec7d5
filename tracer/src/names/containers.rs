//! Container runtimes' names in cgroup paths.
//!
//! With the systemd cgroup driver each runtime asks systemd for a scope
//! named after the container: `docker-<id>.scope` (Docker, and cri-dockerd
//! under Kubernetes), `cri-containerd-<id>.scope` (containerd's CRI plugin),
//! `nerdctl-<id>.scope`, `crio-<id>.scope` with its monitor in
//! `crio-conmon-<id>.scope` (CRI-O), `libpod-<id>.scope` with
//! `libpod-conmon-<id>.scope` (Podman, under `machine.slice` as root or the
//! user's manager rootless). With the cgroupfs driver the same prefixes
//! appear without `.scope` (CRI-O, Podman), or the directory is the bare id
//! under its runtime's parent (`/docker/<id>`, `/containerd/<id>`) or under
//! the pod (`/kubepods/burstable/pod<uid>/<id>`).
//!
//! Every runtime here uses 64 hex digits for ids; a bare directory is taken
//! for a container only with exactly that, prefixed names with 12 to 64, so
//! that `docker-compose@x.service` or a `/docker/build` directory are not.

use serde::Serialize;

/// The container runtime a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Runtime {
    #[serde(rename = "docker")]
    Docker,
    #[serde(rename = "containerd")]
    Containerd,
    #[serde(rename = "cri-o")]
    CriO,
    #[serde(rename = "podman")]
    Podman,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
        }
    }
}

/// A container (or its monitor) named by one path segment.
#[derive(Clone, Copy, Debug)]
pub(super) struct ContainerSeg<'a> {
    pub id: &'a str,
    pub runtime: Option<Runtime>,
    /// conmon, the runtime's per-container monitor, not the container.
    pub monitor: bool,
}

/// Scope prefixes, longest first where one is a prefix of another.
const PREFIXES: &[(&str, Runtime, bool)] = &[
    ("cri-containerd-", Runtime::Containerd, false),
    ("crio-conmon-", Runtime::CriO, true),
    ("crio-", Runtime::CriO, false),
    ("libpod-conmon-", Runtime::Podman, true),
    ("libpod-", Runtime::Podman, false),
    ("docker-", Runtime::Docker, false),
    ("nerdctl-", Runtime::Containerd, false),
];

/// Length of a full container id.
pub(super) const ID_LEN: usize = 64;
/// Length of the short id `docker ps` and `crictl ps` show.
pub(super) const SHORT_ID_LEN: usize = 12;

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_prefixed_id(s: &str) -> bool {
    (SHORT_ID_LEN..=ID_LEN).contains(&s.len()) && is_hex(s)
}

/// The container a segment names, `parent` being the segment above it.
pub(super) fn parse<'a>(segment: &'a str, parent: Option<&str>) -> Option<ContainerSeg<'a>> {
    let stem = segment.strip_suffix(".scope").unwrap_or(segment);
    for &(prefix, runtime, monitor) in PREFIXES {
        if let Some(id) = stem.strip_prefix(prefix) {
            return is_prefixed_id(id).then_some(ContainerSeg {
                id,
                runtime: Some(runtime),
                monitor,
            });
        }
    }
    if segment.len() == ID_LEN && is_hex(segment) {
        let runtime = match parent {
            Some("docker") => Some(Runtime::Docker),
            Some("containerd") => Some(Runtime::Containerd),
            Some("libpod_parent") => Some(Runtime::Podman),
            // Under a pod (cgroupfs driver) the runtime is not in the path.
            _ => None,
        };
        return Some(ContainerSeg {
            id: segment,
            runtime,
            monitor: false,
        });
    }
    None
}

/// The container of a `<slice>:<prefix>:<id>` segment, the systemd-style
/// cgroupsPath a runtime set to the systemd driver receives; when the
/// kubelet (cgroupfs) and the runtime (systemd) disagree, directories are
/// named that way verbatim.
pub(super) fn parse_cgroups_path<'a>(prefix: &str, id: &'a str) -> Option<ContainerSeg<'a>> {
    let runtime = match prefix {
        "cri-containerd" => Runtime::Containerd,
        "crio" => Runtime::CriO,
        "docker" => Runtime::Docker,
        "libpod" => Runtime::Podman,
        _ => return None,
    };
    is_prefixed_id(id).then_some(ContainerSeg {
        id,
        runtime: Some(runtime),
        monitor: false,
    })
}

/// The short id: the first 12 characters, as `docker ps` shows them.
pub(super) fn short_id(id: &str) -> &str {
    id.get(..SHORT_ID_LEN).unwrap_or(id)
}
