//! Enrichment against real sockets and files: an HTTP server on a unix
//! socket answering as the Docker Engine API does (HTTP/1.0 in, the body
//! until the connection closes), runtime state files as containerd, CRI-O
//! and the kubelet write them, and this host's user database.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;

use super::*;
use crate::test_util::tempdir;

const ID: &str = "ae836c95b4c3c9e9179e0e91015512da89fdec91612f63cebae57df9a5444c79";
const POD: &str = "8e3f1a52-7c4d-4b2a-9f10-2d6e5a7b8c9d";

/// Serves `answers` in turn on a unix socket, one connection each, and
/// returns the request lines it read.
fn serve(sock: &Path, answers: Vec<&'static [u8]>) -> std::thread::JoinHandle<Vec<String>> {
    let l = UnixListener::bind(sock).unwrap();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        for a in answers {
            let (mut c, _) = l.accept().unwrap();
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            seen.push(line.trim().to_string());
            // The rest of the request, to its empty line.
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            if !a.is_empty() {
                let _ = c.write_all(a);
            }
            // Close: HTTP/1.0's end of the body.
        }
        seen
    })
}

/// The shape of Docker's `GET /containers/{id}/json` (Engine API v1.43),
/// cut to the fields around the ones read; a cri-dockerd container has the
/// kubelet's labels.
const DOCKER: &[u8] = b"HTTP/1.0 200 OK\r\nApi-Version: 1.43\r\nContent-Type: application/json\r\n\r\n\
{\"Id\":\"ae836c95b4c3c9e9179e0e91015512da89fdec91612f63cebae57df9a5444c79\",\
\"Created\":\"2026-07-02T15:40:00Z\",\"Path\":\"/usr/bin/ugrep\",\"Name\":\"/t3-indexer\",\
\"State\":{\"Status\":\"running\",\"Pid\":4242},\
\"Config\":{\"Hostname\":\"ae836c95b4c3\",\"Image\":\"t3:latest\",\"Labels\":{\"com.docker.compose.service\":\"indexer\"}},\
\"HostConfig\":{\"CgroupParent\":\"docker.slice\",\"Memory\":8589934592}}";

const CRI_DOCKERD: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n\
{\"Name\":\"/k8s_app_web-5d8f9_shop_8e3f1a52-7c4d-4b2a-9f10-2d6e5a7b8c9d_0\",\
\"Config\":{\"Labels\":{\"io.kubernetes.container.name\":\"app\",\"io.kubernetes.pod.name\":\"web-5d8f9\",\
\"io.kubernetes.pod.namespace\":\"shop\",\"io.kubernetes.pod.uid\":\"8e3f1a52-7c4d-4b2a-9f10-2d6e5a7b8c9d\"}}}";

const NOT_FOUND: &[u8] = b"HTTP/1.0 404 Not Found\r\nContent-Type: application/json\r\n\r\n\
{\"message\":\"No such container: ae836c95b4c3\"}";

#[test]
fn docker_engine_api_names_containers_and_their_pods() {
    let d = tempdir("enrich");
    let sock = d.join("docker.sock");
    let server = serve(
        &sock,
        vec![
            DOCKER,
            CRI_DOCKERD,
            NOT_FOUND,
            b"HTTP/1.0 500 Oops\r\n\r\n",
            b"garbage",
        ],
    );
    let t = Duration::from_secs(5);
    let n = engine_api(&sock, ID, t).unwrap().unwrap();
    assert_eq!(n.name.as_deref(), Some("t3-indexer"));
    assert_eq!(n.pod, PodNames::default());
    let n = engine_api(&sock, ID, t).unwrap().unwrap();
    assert_eq!(n.name.as_deref(), Some("app"));
    assert_eq!(n.pod_uid.as_deref(), Some(POD));
    assert_eq!(n.pod.name.as_deref(), Some("web-5d8f9"));
    assert_eq!(n.pod.namespace.as_deref(), Some("shop"));
    assert_eq!(
        engine_api(&sock, ID, t).unwrap(),
        None,
        "404: no such container"
    );
    let e = engine_api(&sock, ID, t).unwrap_err();
    assert!(e.contains("500"), "{e}");
    assert!(engine_api(&sock, ID, t).is_err(), "no status line");
    let seen = server.join().unwrap();
    assert_eq!(seen[0], format!("GET /containers/{ID}/json HTTP/1.0"));
    // No socket: the runtime is not there.
    assert_eq!(engine_api(&d.join("none.sock"), ID, t).unwrap(), None);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_runtime_that_does_not_answer_times_out() {
    let d = tempdir("enrich");
    let sock = d.join("slow.sock");
    // Accepts, reads the request, never answers until the test is done.
    let l = UnixListener::bind(&sock).unwrap();
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (c, _) = l.accept().unwrap();
        let _ = wait.recv();
        drop(c);
    });
    let t0 = Instant::now();
    let e = engine_api(&sock, ID, Duration::from_millis(200)).unwrap_err();
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(200), "{took:?}");
    // Generous: a loaded CI machine may wake the thread late.
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(e.contains("timed out") || e.contains("read"), "{e}");
    done.send(()).unwrap();
    server.join().unwrap();
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_huge_answer_is_refused() {
    let d = tempdir("enrich");
    let sock = d.join("big.sock");
    let big: &'static [u8] = Box::leak(
        [
            b"HTTP/1.0 200 OK\r\n\r\n".as_slice(),
            &vec![b' '; (MAX_ANSWER + 10) as usize],
        ]
        .concat()
        .into_boxed_slice(),
    );
    let server = serve(&sock, vec![big]);
    let e = engine_api(&sock, ID, Duration::from_secs(10)).unwrap_err();
    assert!(e.contains("too long"), "{e}");
    server.join().unwrap();
    std::fs::remove_dir_all(&d).unwrap();
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn containerd_crio_and_kubelet_state_files() {
    let d = tempdir("enrich");
    let s = Sources {
        containerd_state: d.join("containerd"),
        crio_state: d.join("crio"),
        kubelet_pods: d.join("pods"),
        ..Sources::default()
    };
    // containerd's CRI plugin writes these annotations into the bundle.
    write(
        &s.containerd_state
            .join("k8s.io")
            .join(ID)
            .join("config.json"),
        &format!(
            r#"{{"ociVersion":"1.1.0","process":{{"args":["/app"]}},"annotations":{{
            "io.kubernetes.cri.container-type":"container",
            "io.kubernetes.cri.container-name":"app",
            "io.kubernetes.cri.sandbox-id":"1207db63eaeb133a85d2b614d12d95d4dff3f29af60d7a7b3c7d39abdf4bd119",
            "io.kubernetes.cri.sandbox-name":"etl-28641","io.kubernetes.cri.sandbox-namespace":"batch",
            "io.kubernetes.cri.sandbox-uid":"{POD}"}}}}"#
        ),
    );
    let n = containerd(&s.containerd_state, ID).unwrap().unwrap();
    assert_eq!(n.name.as_deref(), Some("app"));
    assert_eq!(n.pod_uid.as_deref(), Some(POD));
    assert_eq!(n.pod.namespace.as_deref(), Some("batch"));
    assert_eq!(n.pod.name.as_deref(), Some("etl-28641"));
    // nerdctl, in containerd's default namespace.
    let other = "1207db63eaeb133a85d2b614d12d95d4dff3f29af60d7a7b3c7d39abdf4bd119";
    write(
        &s.containerd_state
            .join("default")
            .join(other)
            .join("config.json"),
        r#"{"annotations":{"nerdctl/name":"redis-1"}}"#,
    );
    assert_eq!(
        containerd(&s.containerd_state, other)
            .unwrap()
            .unwrap()
            .name
            .as_deref(),
        Some("redis-1")
    );
    // CRI-O keeps the pod's labels as one JSON annotation.
    write(
        &s.crio_state.join(ID).join("userdata/config.json"),
        &format!(
            r#"{{"annotations":{{"io.kubernetes.cri-o.Labels":"{{\"io.kubernetes.container.name\":\"worker\",\"io.kubernetes.pod.name\":\"etl-28641\",\"io.kubernetes.pod.namespace\":\"batch\",\"io.kubernetes.pod.uid\":\"{POD}\"}}","io.kubernetes.cri-o.Namespace":"batch"}}}}"#
        ),
    );
    let n = crio(&s.crio_state, ID).unwrap().unwrap();
    assert_eq!(n.name.as_deref(), Some("worker"));
    assert_eq!(n.pod.namespace.as_deref(), Some("batch"));
    // A pod no container answered for: the service account's namespace.
    write(
        &s.kubelet_pods
            .join(POD)
            .join("volumes/kubernetes.io~projected/kube-api-access-x7k2p/namespace"),
        "batch",
    );
    assert_eq!(
        kubelet_namespace(&s.kubelet_pods, POD).unwrap().as_deref(),
        Some("batch")
    );
    assert_eq!(kubelet_namespace(&s.kubelet_pods, "0000").unwrap(), None);
    // Broken files are failures, absent ones are not.
    write(
        &s.crio_state.join(other).join("userdata/config.json"),
        "{not json",
    );
    assert!(crio(&s.crio_state, other).is_err());
    let stats = Stats::default();
    let missing = "abcdefabcdef";
    assert!(
        lookup(
            &s,
            &Ask::Container {
                id: missing.into(),
                runtime: Some(Runtime::CriO),
                owner: None
            },
            &stats
        )
        .is_empty()
    );
    // A bare id under a pod: containerd's files answer first.
    let got = lookup(
        &s,
        &Ask::Container {
            id: ID.into(),
            runtime: None,
            owner: None,
        },
        &stats,
    );
    assert!(
        matches!(&got[..], [Learned::Container { names, .. }] if names.name.as_deref() == Some("app")),
        "{got:?}"
    );
    let counts = stats.read();
    let get = |src: &str, o: Outcome| {
        counts
            .iter()
            .find(|(s, oo, _)| *s == src && *oo == o)
            .map_or(0, |c| c.2)
    };
    assert_eq!(get("cri-o", Outcome::Missing), 1);
    assert_eq!(get("containerd", Outcome::Found), 1);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn hostile_ids_never_reach_a_path_or_a_request() {
    let d = tempdir("enrich");
    let s = Sources {
        containerd_state: d.to_path_buf(),
        crio_state: d.to_path_buf(),
        kubelet_pods: d.to_path_buf(),
        ..Sources::default()
    };
    let stats = Stats::default();
    for id in [
        "../../etc/passwd",
        "ae836c95b4c3/../x",
        "ae836c95b4c3 HTTP/1.1\r\n",
    ] {
        let ask = Ask::Container {
            id: id.into(),
            runtime: None,
            owner: None,
        };
        assert!(lookup(&s, &ask, &stats).is_empty());
        assert!(lookup(&s, &Ask::Pod(id.into()), &stats).is_empty());
    }
    assert!(
        stats.read().iter().all(|(_, _, n)| *n == 0),
        "nothing was looked up"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn users_from_this_hosts_database() {
    assert_eq!(user_name(0).unwrap().as_deref(), Some("root"));
    // The highest uid, which no system gives out.
    assert_eq!(user_name(u32::MAX - 1).unwrap(), None);
}

#[test]
fn the_thread_answers_without_anyone_waiting() {
    let d = tempdir("enrich");
    let sock = d.join("podman.sock");
    let server = serve(&sock, vec![DOCKER]);
    let e = Enricher::start(Sources {
        podman_socket: sock,
        ..Sources::default()
    })
    .unwrap();
    let back = e.ask(vec![
        Ask::User(0),
        Ask::Container {
            id: ID.into(),
            runtime: Some(Runtime::Podman),
            owner: None,
        },
    ]);
    assert!(back.is_empty());
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < 2 && Instant::now() < deadline {
        got.extend(e.answers());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(got.contains(&Learned::User {
        uid: 0,
        name: "root".into()
    }));
    assert!(got.iter().any(
        |l| matches!(l, Learned::Container { names, .. } if names.name.as_deref() == Some("t3-indexer"))
    ));
    server.join().unwrap();
    std::fs::remove_dir_all(&d).unwrap();
}
