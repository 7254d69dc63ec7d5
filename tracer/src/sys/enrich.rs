//! Enrichment: the names a cgroup's path does not tell, looked up on a
//! thread of its own, off the kill path, and never required.
//!
//! The registry asks ([`Ask`]: a uid, a container id, a pod UID) once per
//! thing; this thread answers with [`Learned`] facts, which the owner of
//! the registry feeds back ([`crate::sys::registry::CgroupRegistry::learn`]).
//! Nothing waits for an answer: a view or an alert made before it arrives
//! names the cgroup from its path alone.
//!
//! Where the names come from:
//! - users: the user database (`getpwuid_r`: NSS with glibc,
//!   `/etc/passwd` in the static build);
//! - Docker (and cri-dockerd's pods): the Engine API on its socket,
//!   `GET /containers/<id>/json` (`Name`, and the `io.kubernetes.*` labels);
//! - Podman: the same call on Podman's socket (`podman.socket`), the
//!   user's own (`/run/user/<uid>/podman/podman.sock`) for a rootless one;
//! - containerd (and nerdctl): the OCI bundle's `config.json` in the task
//!   state directory, whose CRI annotations name the container, its pod
//!   and namespace;
//! - CRI-O: its container's `userdata/config.json`, whose
//!   `io.kubernetes.cri-o.Labels` annotation holds the same;
//! - a pod no container answered for: the namespace the kubelet wrote for
//!   its service account token (`/var/lib/kubelet/pods/<uid>/volumes/
//!   kubernetes.io~projected/*/namespace`; the token beside it is never
//!   read).
//!
//! Each lookup has a short timeout ([`Sources::timeout`]); what fails is
//! counted per source ([`Stats`], on the metrics page), never logged per
//! cgroup, and never retried for that cgroup.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, channel, sync_channel};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::names::{Ask, ContainerNames, Learned, PodNames, Runtime};

/// The most bytes read of one answer (a container's JSON is tens of KiB).
const MAX_ANSWER: u64 = 4 << 20;
/// Batches of questions waiting for the thread; more are asked again later.
const QUEUE: usize = 64;

/// Where to look, and for how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sources {
    pub docker_socket: PathBuf,
    pub podman_socket: PathBuf,
    /// Rootless Podman's sockets: `<this>/<uid>/podman/podman.sock`.
    pub user_runtime_dir: PathBuf,
    /// containerd's task state: `<this>/<namespace>/<id>/config.json`.
    pub containerd_state: PathBuf,
    /// CRI-O's containers: `<this>/<id>/userdata/config.json`.
    pub crio_state: PathBuf,
    pub kubelet_pods: PathBuf,
    /// For each lookup: connecting, asking and reading.
    pub timeout: Duration,
}

impl Default for Sources {
    fn default() -> Self {
        Self {
            docker_socket: "/run/docker.sock".into(),
            podman_socket: "/run/podman/podman.sock".into(),
            user_runtime_dir: "/run/user".into(),
            containerd_state: "/run/containerd/io.containerd.runtime.v2.task".into(),
            crio_state: "/run/containers/storage/overlay-containers".into(),
            kubelet_pods: "/var/lib/kubelet/pods".into(),
            timeout: Duration::from_millis(250),
        }
    }
}

/// The sources, as the metrics page labels them.
pub const SOURCES: [&str; 6] = [
    "passwd",
    "docker",
    "podman",
    "containerd",
    "cri-o",
    "kubelet",
];

/// Lookups per source: found a name, found nothing (no such socket, file
/// or container: the runtime is not there), failed (timeout, refused, a
/// reply that does not parse).
#[derive(Debug, Default)]
pub struct Stats {
    counts: [[AtomicU64; 3]; SOURCES.len()],
    /// Batches of questions the full queue turned away (asked again).
    pub busy: AtomicU64,
}

/// How one lookup ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Found,
    Missing,
    Failed,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Found, Outcome::Missing, Outcome::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Found => "found",
            Outcome::Missing => "missing",
            Outcome::Failed => "failed",
        }
    }
}

impl Stats {
    fn count(&self, source: &str, o: Outcome) {
        if let Some(i) = SOURCES.iter().position(|s| *s == source) {
            self.counts[i][o as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `(source, outcome, count)` for every pair, zeros included.
    pub fn read(&self) -> Vec<(&'static str, Outcome, u64)> {
        let mut out = Vec::new();
        for (i, s) in SOURCES.iter().enumerate() {
            for o in Outcome::ALL {
                out.push((*s, o, self.counts[i][o as usize].load(Ordering::Relaxed)));
            }
        }
        out
    }
}

/// The enrichment thread, from its owner's side.
pub struct Enricher {
    asks: SyncSender<Vec<Ask>>,
    answers: Receiver<Learned>,
    pub stats: Arc<Stats>,
}

impl Enricher {
    /// Starts the thread; `None` if the system would not start one.
    pub fn start(sources: Sources) -> Option<Self> {
        let (asks, asked) = sync_channel::<Vec<Ask>>(QUEUE);
        let (tell, answers) = channel();
        let stats = Arc::new(Stats::default());
        let st = stats.clone();
        std::thread::Builder::new()
            .name("memtrace-names".into())
            .spawn(move || {
                for batch in asked {
                    for ask in batch {
                        for fact in lookup(&sources, &ask, &st) {
                            if tell.send(fact).is_err() {
                                return;
                            }
                        }
                    }
                }
            })
            .ok()?;
        Some(Self {
            asks,
            answers,
            stats,
        })
    }

    /// Queues questions without waiting; the ones the full queue turned
    /// away come back, to be asked again.
    pub fn ask(&self, asks: Vec<Ask>) -> Vec<Ask> {
        if asks.is_empty() {
            return asks;
        }
        match self.asks.try_send(asks) {
            Ok(()) => Vec::new(),
            Err(TrySendError::Full(a) | TrySendError::Disconnected(a)) => {
                self.stats.busy.fetch_add(1, Ordering::Relaxed);
                a
            }
        }
    }

    /// The answers that arrived, without waiting.
    pub fn answers(&self) -> Vec<Learned> {
        self.answers.try_iter().take(4096).collect()
    }
}

/// Answers one question, counting how each source did.
pub fn lookup(s: &Sources, ask: &Ask, stats: &Stats) -> Vec<Learned> {
    match ask {
        Ask::User(uid) => {
            let r = user_name(*uid);
            stats.count("passwd", outcome(&r));
            match r {
                Ok(Some(name)) => vec![Learned::User { uid: *uid, name }],
                _ => Vec::new(),
            }
        }
        Ask::Container { id, runtime, owner } => {
            if !is_container_id(id) {
                return Vec::new();
            }
            for &source in container_sources(*runtime) {
                let r = match source {
                    "docker" => engine_api(&s.docker_socket, id, s.timeout),
                    "podman" => {
                        let sock = owner.map_or_else(
                            || s.podman_socket.clone(),
                            |uid| {
                                s.user_runtime_dir
                                    .join(uid.to_string())
                                    .join("podman/podman.sock")
                            },
                        );
                        engine_api(&sock, id, s.timeout)
                    }
                    "containerd" => containerd(&s.containerd_state, id),
                    _ => crio(&s.crio_state, id),
                };
                stats.count(source, outcome(&r));
                if let Ok(Some(names)) = r {
                    return vec![Learned::Container {
                        id: id.clone(),
                        names,
                    }];
                }
            }
            Vec::new()
        }
        Ask::Pod(uid) => {
            if !is_pod_uid(uid) {
                return Vec::new();
            }
            let r = kubelet_namespace(&s.kubelet_pods, uid);
            stats.count("kubelet", outcome(&r));
            match r {
                Ok(Some(ns)) => vec![Learned::Pod {
                    uid: uid.clone(),
                    names: PodNames {
                        name: None,
                        namespace: Some(ns),
                    },
                }],
                _ => Vec::new(),
            }
        }
    }
}

fn outcome<T>(r: &Result<Option<T>, String>) -> Outcome {
    match r {
        Ok(Some(_)) => Outcome::Found,
        Ok(None) => Outcome::Missing,
        Err(_) => Outcome::Failed,
    }
}

/// Which sources may know a container, in the order they are asked.
fn container_sources(runtime: Option<Runtime>) -> &'static [&'static str] {
    match runtime {
        Some(Runtime::Docker) => &["docker"],
        Some(Runtime::Podman) => &["podman"],
        Some(Runtime::Containerd) => &["containerd"],
        Some(Runtime::CriO) => &["cri-o"],
        // A bare id under a pod (cgroupfs driver): any CRI runtime.
        None => &["containerd", "cri-o", "docker"],
    }
}

/// Ids and UIDs come from the path, but go into socket requests and file
/// paths: only hex (and `-` for UIDs) is let through.
fn is_container_id(id: &str) -> bool {
    (12..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_pod_uid(uid: &str) -> bool {
    (1..=64).contains(&uid.len()) && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// The user name of a uid from the user database.
fn user_name(uid: u32) -> Result<Option<String>, String> {
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: passwd is plain data, written by getpwuid_r.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call, buf for its length.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                &raw mut pw,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &raw mut out,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(format!("getpwuid_r: errno {rc}"));
        }
        if out.is_null() || pw.pw_name.is_null() {
            return Ok(None);
        }
        // SAFETY: pw_name points into buf, NUL-terminated by getpwuid_r.
        let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
        return Ok(Some(name.to_string_lossy().into_owned()));
    }
}

/// The Kubernetes labels the runtimes put on a pod's containers.
fn k8s_names(labels: &HashMap<String, String>) -> ContainerNames {
    let get = |k: &str| labels.get(k).filter(|v| !v.is_empty()).cloned();
    ContainerNames {
        name: get("io.kubernetes.container.name"),
        pod_uid: get("io.kubernetes.pod.uid"),
        pod: PodNames {
            name: get("io.kubernetes.pod.name"),
            namespace: get("io.kubernetes.pod.namespace"),
        },
    }
}

#[derive(Deserialize)]
struct EngineContainer {
    #[serde(rename = "Name")]
    name: Option<String>,
    #[serde(rename = "Config")]
    config: Option<EngineConfig>,
}

#[derive(Deserialize)]
struct EngineConfig {
    #[serde(rename = "Labels")]
    labels: Option<HashMap<String, String>>,
}

/// `GET /containers/<id>/json` on a Docker Engine API socket (Docker's or
/// Podman's): `Ok(None)` when there is no such socket or container.
fn engine_api(
    socket: &Path,
    id: &str,
    timeout: Duration,
) -> Result<Option<ContainerNames>, String> {
    let Some(body) = http_get(socket, &format!("/containers/{id}/json"), timeout)? else {
        return Ok(None);
    };
    let c: EngineContainer =
        serde_json::from_slice(&body).map_err(|e| format!("container JSON: {e}"))?;
    let labels = c.config.and_then(|c| c.labels).unwrap_or_default();
    let mut names = k8s_names(&labels);
    if names.name.is_none() {
        names.name = c.name.map(|n| n.trim_start_matches('/').to_string());
    }
    Ok(Some(names))
}

/// One HTTP/1.0 GET over a unix socket: the body of a 200, `None` for no
/// socket or a 404, an error for anything else. HTTP/1.0, so the server
/// closes the connection after the body and sends no chunked encoding.
pub fn http_get(socket: &Path, target: &str, timeout: Duration) -> Result<Option<Vec<u8>>, String> {
    let deadline = Instant::now() + timeout;
    let mut s = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(format!("connect {}: {e}", socket.display())),
    };
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| "timed out".to_string())
    };
    s.set_write_timeout(Some(left()?))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET {target} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        s.set_read_timeout(Some(left()?))
            .map_err(|e| e.to_string())?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                reply.extend_from_slice(&chunk[..n]);
                if reply.len() as u64 > MAX_ANSWER {
                    return Err("answer too long".into());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let head_end = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = String::from_utf8_lossy(&reply[..head_end]);
    let status: u16 = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or("no status line")?;
    match status {
        200 => Ok(Some(reply[head_end + 4..].to_vec())),
        404 => Ok(None),
        c => Err(format!("status {c}")),
    }
}

#[derive(Deserialize)]
struct OciSpec {
    annotations: Option<HashMap<String, String>>,
}

/// An OCI bundle's annotations: `Ok(None)` when there is no such file.
fn oci_annotations(file: &Path) -> Result<Option<HashMap<String, String>>, String> {
    let f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", file.display())),
    };
    let mut text = Vec::new();
    f.take(MAX_ANSWER)
        .read_to_end(&mut text)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let spec: OciSpec =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(Some(spec.annotations.unwrap_or_default()))
}

/// containerd: the CRI plugin's annotations (namespace `k8s.io`), or
/// nerdctl's (namespace `default`).
fn containerd(state: &Path, id: &str) -> Result<Option<ContainerNames>, String> {
    for ns in ["k8s.io", "default"] {
        let Some(a) = oci_annotations(&state.join(ns).join(id).join("config.json"))? else {
            continue;
        };
        let get = |k: &str| a.get(k).filter(|v| !v.is_empty()).cloned();
        let sandbox = a
            .get("io.kubernetes.cri.container-type")
            .map(String::as_str)
            == Some("sandbox");
        return Ok(Some(ContainerNames {
            name: get("io.kubernetes.cri.container-name")
                .or_else(|| get("nerdctl/name"))
                .or_else(|| sandbox.then(|| "POD".to_string())),
            pod_uid: get("io.kubernetes.cri.sandbox-uid"),
            pod: PodNames {
                name: get("io.kubernetes.cri.sandbox-name"),
                namespace: get("io.kubernetes.cri.sandbox-namespace"),
            },
        }));
    }
    Ok(None)
}

/// CRI-O: the pod's labels, kept as one JSON annotation.
fn crio(state: &Path, id: &str) -> Result<Option<ContainerNames>, String> {
    let Some(a) = oci_annotations(&state.join(id).join("userdata/config.json"))? else {
        return Ok(None);
    };
    let labels: HashMap<String, String> = match a.get("io.kubernetes.cri-o.Labels") {
        Some(text) => serde_json::from_str(text).map_err(|e| format!("cri-o labels: {e}"))?,
        None => HashMap::new(),
    };
    let mut names = k8s_names(&labels);
    if names.pod.namespace.is_none() {
        names.pod.namespace = a.get("io.kubernetes.cri-o.Namespace").cloned();
    }
    Ok(Some(names))
}

/// The namespace the kubelet wrote into a pod's projected service account
/// volume.
fn kubelet_namespace(pods: &Path, uid: &str) -> Result<Option<String>, String> {
    let dir = pods.join(uid).join("volumes/kubernetes.io~projected");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    for e in entries.flatten() {
        let file = e.path().join("namespace");
        let Ok(f) = std::fs::File::open(&file) else {
            continue;
        };
        let mut text = String::new();
        // A namespace is a DNS label: 63 bytes.
        if f.take(256).read_to_string(&mut text).is_ok() && !text.trim().is_empty() {
            return Ok(Some(text.trim().to_string()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
