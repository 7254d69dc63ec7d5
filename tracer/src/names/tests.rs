//! The naming stage over real path shapes, each with where it comes from.

use super::identity::Labels;
use super::known;
use super::*;

/// Docker's own example long id (Docker docs, "Runtime metrics": "If a
/// container shows up as ae836c95b4c3 in `docker ps`, its long ID might be
/// something like ae836c95b4c3c9e9…").
const D: &str = "ae836c95b4c3c9e9179e0e91015512da89fdec91612f63cebae57df9a5444c79";
const D_SHORT: &str = "ae836c95b4c3";
/// A second id, for containerd, CRI-O and Podman shapes.
const C: &str = "1207db63eaeb133a85d2b614d12d95d4dff3f29af60d7a7b3c7d39abdf4bd119";
const C_SHORT: &str = "1207db63eaeb";
/// A pod UID as the API shows it, and as the systemd driver spells it.
const P: &str = "8e3f1a52-7c4d-4b2a-9f10-2d6e5a7b8c9d";
const P_: &str = "8e3f1a52_7c4d_4b2a_9f10_2d6e5a7b8c9d";
const P_NAME: &str = "pod:8e3f1a52";

#[derive(Debug)]
struct Want {
    kind: Kind,
    name: &'static str,
    unit: Option<&'static str>,
    template: Option<&'static str>,
    instance: Option<&'static str>,
    slice: Option<&'static str>,
    uid: Option<u32>,
    session: Option<&'static str>,
    container: Option<&'static str>,
    runtime: Option<Runtime>,
    pod: Option<&'static str>,
    qos: Option<QosClass>,
}

const NONE: Want = Want {
    kind: Kind::Other,
    name: "",
    unit: None,
    template: None,
    instance: None,
    slice: None,
    uid: None,
    session: None,
    container: None,
    runtime: None,
    pod: None,
    qos: None,
};

/// A `&'static str` from a built string, for expectations.
fn s(v: String) -> &'static str {
    Box::leak(v.into_boxed_str())
}

fn mismatches(source: &str, path: &str, w: &Want) -> Vec<String> {
    let id = identify(path);
    let mut out = Vec::new();
    let mut cmp = |field: &str, got: String, want: String| {
        if got != want {
            out.push(format!(
                "[{source}] {path:?}: {field}: got {got}, want {want}"
            ));
        }
    };
    cmp("kind", format!("{:?}", id.kind()), format!("{:?}", w.kind));
    cmp("name", format!("{:?}", id.name()), format!("{:?}", w.name));
    cmp("unit", format!("{:?}", id.unit()), format!("{:?}", w.unit));
    cmp(
        "template",
        format!("{:?}", id.template()),
        format!("{:?}", w.template),
    );
    cmp(
        "instance",
        format!("{:?}", id.instance()),
        format!("{:?}", w.instance),
    );
    cmp(
        "slice",
        format!("{:?}", id.slice()),
        format!("{:?}", w.slice),
    );
    cmp("uid", format!("{:?}", id.uid()), format!("{:?}", w.uid));
    cmp(
        "session",
        format!("{:?}", id.session()),
        format!("{:?}", w.session),
    );
    cmp(
        "container",
        format!("{:?}", id.container_id()),
        format!("{:?}", w.container),
    );
    cmp(
        "runtime",
        format!("{:?}", id.runtime()),
        format!("{:?}", w.runtime),
    );
    cmp("pod", format!("{:?}", id.pod_uid()), format!("{:?}", w.pod));
    cmp("qos", format!("{:?}", id.qos()), format!("{:?}", w.qos));
    out
}

fn check_table(table: Vec<(&str, String, Want)>) {
    let failures: Vec<String> = table
        .iter()
        .flat_map(|(source, path, want)| mismatches(source, path, want))
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn systemd_paths() {
    const T: &str = "systemd src/test/test-cgroup-util.c";
    check_table(vec![
        (
            T,
            "/system.slice/foobar.service/sdfdsaf".into(),
            Want {
                kind: Kind::Subgroup,
                name: "foobar.service/sdfdsaf",
                unit: Some("foobar.service"),
                slice: Some("system.slice"),
                ..NONE
            },
        ),
        (
            T,
            "/system.slice/getty@tty5.service".into(),
            Want {
                kind: Kind::Service,
                name: "getty@tty5.service",
                unit: Some("getty@tty5.service"),
                template: Some("getty@.service"),
                instance: Some("tty5"),
                slice: Some("system.slice"),
                ..NONE
            },
        ),
        (
            T,
            "/system.slice/getty@tty5.service/aaa/bbb".into(),
            Want {
                kind: Kind::Subgroup,
                name: "getty@tty5.service/bbb",
                unit: Some("getty@tty5.service"),
                template: Some("getty@.service"),
                instance: Some("tty5"),
                slice: Some("system.slice"),
                ..NONE
            },
        ),
        (
            // Not a unit name: systemd answers -ENXIO.
            T,
            "/system.slice/getty####@tty6.service/xxx".into(),
            Want {
                kind: Kind::Subgroup,
                name: "system.slice/xxx",
                unit: Some("system.slice"),
                ..NONE
            },
        ),
        (
            // cg_escape()d: `_cpu.service` is the unit cpu.service.
            T,
            "/system.slice/system-waldo.slice/_cpu.service/sdfdsaf".into(),
            Want {
                kind: Kind::Subgroup,
                name: "cpu.service/sdfdsaf",
                unit: Some("cpu.service"),
                slice: Some("system-waldo.slice"),
                ..NONE
            },
        ),
        (
            // cg_path_get_user_unit: the user manager's unit.
            T,
            "/user.slice/user-1000.slice/user@1000.service/server.service".into(),
            Want {
                kind: Kind::Service,
                name: "server.service",
                unit: Some("server.service"),
                uid: Some(1000),
                ..NONE
            },
        ),
        (
            // A template never runs: `user@.service` is no unit.
            T,
            "/user.slice/user-1000.slice/user@.service".into(),
            Want {
                kind: Kind::Subgroup,
                name: "user-1000.slice/user@.service",
                unit: Some("user-1000.slice"),
                slice: Some("user.slice"),
                uid: Some(1000),
                ..NONE
            },
        ),
        (
            T,
            "/user.slice/_user-1000.slice/user@1000.service/foobar.slice/foobar@pie.service".into(),
            Want {
                kind: Kind::Service,
                name: "foobar@pie.service",
                unit: Some("foobar@pie.service"),
                template: Some("foobar@.service"),
                instance: Some("pie"),
                slice: Some("foobar.slice"),
                uid: Some(1000),
                ..NONE
            },
        ),
        (
            T,
            "/user.slice/user-1000.slice/session-2.scope/foobar.service".into(),
            Want {
                kind: Kind::Service,
                name: "foobar.service",
                unit: Some("foobar.service"),
                uid: Some(1000),
                session: Some("2"),
                ..NONE
            },
        ),
        (
            T,
            "/session-3.scope".into(),
            Want {
                kind: Kind::Session,
                name: "session-3.scope",
                unit: Some("session-3.scope"),
                session: Some("3"),
                ..NONE
            },
        ),
        (
            T,
            "/session-.scope".into(),
            Want {
                kind: Kind::Scope,
                name: "session-.scope",
                unit: Some("session-.scope"),
                ..NONE
            },
        ),
        (
            T,
            "/user.slice/user-1006.slice".into(),
            Want {
                kind: Kind::Slice,
                name: "user-1006.slice",
                unit: Some("user-1006.slice"),
                slice: Some("user.slice"),
                uid: Some(1006),
                ..NONE
            },
        ),
        (
            T,
            "/capsule.slice/capsule@test.service/app.slice/run-p9-i1.service".into(),
            Want {
                kind: Kind::Service,
                name: "run-p9-i1.service",
                unit: Some("run-p9-i1.service"),
                slice: Some("app.slice"),
                ..NONE
            },
        ),
        (
            T,
            "//system.service//piff".into(),
            Want {
                kind: Kind::Subgroup,
                name: "system.service/piff",
                unit: Some("system.service"),
                ..NONE
            },
        ),
        (
            T,
            "/init.scope".into(),
            Want {
                kind: Kind::Scope,
                name: "init.scope",
                unit: Some("init.scope"),
                ..NONE
            },
        ),
        (
            "root cgroup",
            "/".into(),
            Want {
                kind: Kind::Root,
                name: "/",
                ..NONE
            },
        ),
        (
            "logind: a login session",
            "/user.slice/user-1000.slice/session-3.scope".into(),
            Want {
                kind: Kind::Session,
                name: "session-3.scope",
                unit: Some("session-3.scope"),
                slice: Some("user-1000.slice"),
                uid: Some(1000),
                session: Some("3"),
                ..NONE
            },
        ),
        (
            "logind: the user's service manager",
            "/user.slice/user-1000.slice/user@1000.service".into(),
            Want {
                kind: Kind::UserManager,
                name: "user@1000.service",
                unit: Some("user@1000.service"),
                template: Some("user@.service"),
                instance: Some("1000"),
                slice: Some("user-1000.slice"),
                uid: Some(1000),
                ..NONE
            },
        ),
        (
            "systemd --user: the manager itself",
            "/user.slice/user-1000.slice/user@1000.service/init.scope".into(),
            Want {
                kind: Kind::Scope,
                name: "init.scope",
                unit: Some("init.scope"),
                uid: Some(1000),
                ..NONE
            },
        ),
        (
            "GNOME Terminal's spawned shells",
            "/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.gnome.Terminal.slice/vte-spawn-0d8c1f5e-8e47-4d6c-9d9f-3c3d5e6f7a8b.scope".into(),
            Want {
                kind: Kind::Scope,
                name: "vte-spawn-0d8c1f5e-8e47-4d6c-9d9f-3c3d5e6f7a8b.scope",
                unit: Some("vte-spawn-0d8c1f5e-8e47-4d6c-9d9f-3c3d5e6f7a8b.scope"),
                slice: Some("app-org.gnome.Terminal.slice"),
                uid: Some(1000),
                ..NONE
            },
        ),
        (
            "systemd-run --scope (as root)",
            "/system.slice/run-r1234.scope".into(),
            Want {
                kind: Kind::Scope,
                name: "run-r1234.scope",
                unit: Some("run-r1234.scope"),
                slice: Some("system.slice"),
                ..NONE
            },
        ),
        (
            "systemd-run --user --scope",
            "/user.slice/user-1000.slice/user@1000.service/app.slice/run-r0b3a3f6c2f5e4b3c8f7a1e2d3c4b5a69.scope".into(),
            Want {
                kind: Kind::Scope,
                name: "run-r0b3a3f6c2f5e4b3c8f7a1e2d3c4b5a69.scope",
                unit: Some("run-r0b3a3f6c2f5e4b3c8f7a1e2d3c4b5a69.scope"),
                slice: Some("app.slice"),
                uid: Some(1000),
                ..NONE
            },
        ),
        (
            "systemd-run (a transient service)",
            "/system.slice/run-u42.service".into(),
            Want {
                kind: Kind::Service,
                name: "run-u42.service",
                unit: Some("run-u42.service"),
                slice: Some("system.slice"),
                ..NONE
            },
        ),
    ]);
}

#[test]
fn systemd_escapes() {
    check_table(vec![
        (
            // The first incident's unit: systemd puts instances of
            // t3-serve@.service in system-t3\x2dserve.slice.
            "seeds: t3-serve@wizard",
            r"/system.slice/system-t3\x2dserve.slice/t3-serve@wizard.service".into(),
            Want {
                kind: Kind::Service,
                name: "t3-serve@wizard.service",
                unit: Some("t3-serve@wizard.service"),
                template: Some("t3-serve@.service"),
                instance: Some("wizard"),
                slice: Some("system-t3-serve.slice"),
                ..NONE
            },
        ),
        (
            "seeds: the template's slice",
            r"/system.slice/system-t3\x2dserve.slice".into(),
            Want {
                kind: Kind::Slice,
                name: "system-t3-serve.slice",
                unit: Some("system-t3-serve.slice"),
                slice: Some("system.slice"),
                ..NONE
            },
        ),
        (
            // systemd-escape(1): `systemd-escape 'Hallöchen, Meister'`
            // prints `Hall\xc3\xb6chen\x2c\x20Meister`.
            "systemd-escape(1)",
            r"/system.slice/Hall\xc3\xb6chen\x2c\x20Meister.service".into(),
            Want {
                kind: Kind::Service,
                name: "Hallöchen, Meister.service",
                unit: Some("Hallöchen, Meister.service"),
                slice: Some("system.slice"),
                ..NONE
            },
        ),
        (
            // systemd-escape(1): `--template=systemd-nspawn@.service 'My Container 1'`.
            "systemd-escape(1)",
            r"/machine.slice/systemd-nspawn@My\x20Container\x201.service".into(),
            Want {
                kind: Kind::Service,
                name: "systemd-nspawn@My Container 1.service",
                unit: Some("systemd-nspawn@My Container 1.service"),
                template: Some("systemd-nspawn@.service"),
                instance: Some("My Container 1"),
                slice: Some("machine.slice"),
                ..NONE
            },
        ),
        (
            // `@` is not in systemd's VALID_CHARS: systemd-escape makes it
            // \x40, so an instance can hold one.
            "systemd.unit(5) escaping: \\x40",
            r"/system.slice/system-t3\x2dserve.slice/t3-serve@ops\x40example.service".into(),
            Want {
                kind: Kind::Service,
                name: "t3-serve@ops@example.service",
                unit: Some("t3-serve@ops@example.service"),
                template: Some("t3-serve@.service"),
                instance: Some("ops@example"),
                slice: Some("system-t3-serve.slice"),
                ..NONE
            },
        ),
        (
            "libvirt/machined: a VM's scope",
            r"/machine.slice/machine-qemu\x2d1\x2ddebian12.scope".into(),
            Want {
                kind: Kind::Scope,
                name: "machine-qemu-1-debian12.scope",
                unit: Some("machine-qemu-1-debian12.scope"),
                slice: Some("machine.slice"),
                ..NONE
            },
        ),
    ]);
    let t3 = identify(r"/system.slice/system-t3\x2dserve.slice/t3-serve@wizard.service");
    assert_eq!(t3.unit_escaped(), None);
    assert_eq!(t3.slice_escaped(), Some(r"system-t3\x2dserve.slice"));
    let slice = identify(r"/system.slice/system-t3\x2dserve.slice");
    assert_eq!(slice.unit_escaped(), Some(r"system-t3\x2dserve.slice"));
    assert_eq!(slice.systemd_unit(), Some(r"system-t3\x2dserve.slice"));
    assert!(slice.is_unit_cgroup());
}

/// systemd's `do_escape()` (unit-name.c), for checking what systemd really
/// escapes and that the readable form undoes it.
fn systemd_escape(s: &str) -> String {
    let mut out = String::new();
    for (i, b) in s.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b':' || b == b'_' || (b == b'.' && i > 0);
        if b == b'/' {
            out.push('-');
        } else if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[test]
fn escaping_matches_systemd_and_unescape_undoes_it() {
    // systemd.unit(5): "/" becomes "-", everything but ASCII alphanumerics,
    // ":", "_" and "." becomes "\xNN", and so does a leading ".".
    assert_eq!(systemd_escape("t3-serve"), r"t3\x2dserve");
    assert_eq!(systemd_escape("a@b"), r"a\x40b");
    assert_eq!(systemd_escape(".dot"), r"\x2edot");
    assert_eq!(systemd_escape("a:b_c.d"), "a:b_c.d");
    assert_eq!(
        systemd_escape("Hallöchen, Meister"),
        r"Hall\xc3\xb6chen\x2c\x20Meister"
    );
    assert_eq!(systemd_escape("/tmp//waldi"), "-tmp--waldi");
    for s in [
        "t3-serve",
        "a@b",
        ".dot",
        "Hallöchen, Meister",
        "x\\y",
        "100%*?[]",
    ] {
        let escaped = systemd_escape(s);
        assert_eq!(unescape(&escaped), s, "{escaped}");
        // And the escaped form is a valid unit name.
        let unit = format!("{escaped}.service");
        assert_eq!(
            identify(&format!("/{unit}")).systemd_unit(),
            Some(unit.as_str())
        );
    }
    // Plain names are borrowed, not copied.
    assert!(matches!(unescape("plain.service"), Cow::Borrowed(_)));
}

#[test]
fn container_paths() {
    check_table(vec![
        (
            "Docker docs, runtime metrics: systemd driver",
            format!("/system.slice/docker-{D}.scope"),
            Want {
                kind: Kind::Container,
                name: D_SHORT,
                unit: Some(s(format!("docker-{D}.scope"))),
                slice: Some("system.slice"),
                container: Some(D),
                runtime: Some(Runtime::Docker),
                ..NONE
            },
        ),
        (
            "Docker docs, runtime metrics: cgroupfs driver",
            format!("/docker/{D}"),
            Want {
                kind: Kind::Container,
                name: D_SHORT,
                container: Some(D),
                runtime: Some(Runtime::Docker),
                ..NONE
            },
        ),
        (
            "seeds: docker.slice, the containers' cap",
            "/docker.slice".into(),
            Want {
                kind: Kind::Slice,
                name: "docker.slice",
                unit: Some("docker.slice"),
                ..NONE
            },
        ),
        (
            "seeds: --cgroup-parent=docker.slice",
            format!("/docker.slice/docker-{D}.scope"),
            Want {
                kind: Kind::Container,
                name: D_SHORT,
                unit: Some(s(format!("docker-{D}.scope"))),
                slice: Some("docker.slice"),
                container: Some(D),
                runtime: Some(Runtime::Docker),
                ..NONE
            },
        ),
        (
            "the Docker daemon is no container",
            "/system.slice/docker.service".into(),
            Want {
                kind: Kind::Service,
                name: "docker.service",
                unit: Some("docker.service"),
                slice: Some("system.slice"),
                ..NONE
            },
        ),
        (
            "docker-compose@.service is no container either",
            "/system.slice/docker-compose@web.service".into(),
            Want {
                kind: Kind::Service,
                name: "docker-compose@web.service",
                unit: Some("docker-compose@web.service"),
                template: Some("docker-compose@.service"),
                instance: Some("web"),
                slice: Some("system.slice"),
                ..NONE
            },
        ),
        (
            "rootless Docker",
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/docker-{D}.scope"),
            Want {
                kind: Kind::Container,
                name: D_SHORT,
                unit: Some(s(format!("docker-{D}.scope"))),
                slice: Some("user.slice"),
                uid: Some(1000),
                container: Some(D),
                runtime: Some(Runtime::Docker),
                ..NONE
            },
        ),
        (
            "Docker in Docker (cgroupfs): the inner container names it",
            format!("/docker/{D}/docker/{C}"),
            Want {
                kind: Kind::Container,
                name: C_SHORT,
                container: Some(C),
                runtime: Some(Runtime::Docker),
                ..NONE
            },
        ),
        (
            "containerd, cgroupfs",
            format!("/containerd/{C}"),
            Want {
                kind: Kind::Container,
                name: C_SHORT,
                container: Some(C),
                runtime: Some(Runtime::Containerd),
                ..NONE
            },
        ),
        (
            "nerdctl, systemd driver",
            format!("/system.slice/nerdctl-{C}.scope"),
            Want {
                kind: Kind::Container,
                name: C_SHORT,
                unit: Some(s(format!("nerdctl-{C}.scope"))),
                slice: Some("system.slice"),
                container: Some(C),
                runtime: Some(Runtime::Containerd),
                ..NONE
            },
        ),
        (
            "Podman, root: machine.slice",
            format!("/machine.slice/libpod-{C}.scope"),
            Want {
                kind: Kind::Container,
                name: C_SHORT,
                unit: Some(s(format!("libpod-{C}.scope"))),
                slice: Some("machine.slice"),
                container: Some(C),
                runtime: Some(Runtime::Podman),
                ..NONE
            },
        ),
        (
            "Podman: conmon's scope",
            format!("/machine.slice/libpod-conmon-{C}.scope"),
            Want {
                kind: Kind::ContainerMonitor,
                name: s(format!("conmon-{C_SHORT}")),
                unit: Some(s(format!("libpod-conmon-{C}.scope"))),
                slice: Some("machine.slice"),
                container: Some(C),
                runtime: Some(Runtime::Podman),
                ..NONE
            },
        ),
        (
            "Podman: the payload's leaf",
            format!("/machine.slice/libpod-{C}.scope/container"),
            Want {
                kind: Kind::Subgroup,
                name: s(format!("{C_SHORT}/container")),
                unit: Some(s(format!("libpod-{C}.scope"))),
                slice: Some("machine.slice"),
                container: Some(C),
                runtime: Some(Runtime::Podman),
                ..NONE
            },
        ),
        (
            "Podman, rootless",
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{C}.scope"),
            Want {
                kind: Kind::Container,
                name: C_SHORT,
                unit: Some(s(format!("libpod-{C}.scope"))),
                slice: Some("user.slice"),
                uid: Some(1000),
                container: Some(C),
                runtime: Some(Runtime::Podman),
                ..NONE
            },
        ),
        (
            "Podman, cgroupfs",
            format!("/libpod_parent/libpod-{C}"),
            Want {
                kind: Kind::Container,
                name: C_SHORT,
                container: Some(C),
                runtime: Some(Runtime::Podman),
                ..NONE
            },
        ),
    ]);
}

#[test]
fn kubernetes_paths() {
    let burstable_pod = s(format!("kubepods-burstable-pod{P_}.slice"));
    let besteffort_pod = s(format!("kubepods-besteffort-pod{P_}.slice"));
    check_table(vec![
        // KEP-2570 (Memory QoS), "Cgroup Hierarchy", cgroupfs format.
        (
            "KEP-2570: Guaranteed container",
            format!("/kubepods/pod{P}/{C}"),
            Want {
                kind: Kind::Container,
                name: C_SHORT,
                container: Some(C),
                pod: Some(P),
                qos: Some(QosClass::Guaranteed),
                ..NONE
            },
        ),
        (
            "KEP-2570: Burstable container",
            format!("/kubepods/burstable/pod{P}/{C}"),
            Want {
                kind: Kind::Container,
                name: C_SHORT,
                container: Some(C),
                pod: Some(P),
                qos: Some(QosClass::Burstable),
                ..NONE
            },
        ),
        (
            "KEP-2570: Guaranteed pod",
            format!("/kubepods/pod{P}"),
            Want {
                kind: Kind::Pod,
                name: P_NAME,
                pod: Some(P),
                qos: Some(QosClass::Guaranteed),
                ..NONE
            },
        ),
        (
            "KEP-2570: Burstable pod",
            format!("/kubepods/burstable/pod{P}"),
            Want {
                kind: Kind::Pod,
                name: P_NAME,
                pod: Some(P),
                qos: Some(QosClass::Burstable),
                ..NONE
            },
        ),
        (
            "KEP-2570: QoS ancestor",
            "/kubepods/burstable".into(),
            Want {
                kind: Kind::Other,
                name: "burstable",
                qos: Some(QosClass::Burstable),
                ..NONE
            },
        ),
        (
            "KEP-2570: the kubepods root",
            "/kubepods".into(),
            Want {
                kind: Kind::Other,
                name: "kubepods",
                ..NONE
            },
        ),
        // KEP-2570: "systemd: /sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<UID>.slice/".
        (
            "KEP-2570: systemd driver, Burstable pod",
            format!("/kubepods.slice/kubepods-burstable.slice/{burstable_pod}"),
            Want {
                kind: Kind::Pod,
                name: P_NAME,
                unit: Some(burstable_pod),
                slice: Some("kubepods-burstable.slice"),
                pod: Some(P),
                qos: Some(QosClass::Burstable),
                ..NONE
            },
        ),
        (
            "KEP-2570: systemd driver, QoS slice",
            "/kubepods.slice/kubepods-burstable.slice".into(),
            Want {
                kind: Kind::Slice,
                name: "kubepods-burstable.slice",
                unit: Some("kubepods-burstable.slice"),
                slice: Some("kubepods.slice"),
                qos: Some(QosClass::Burstable),
                ..NONE
            },
        ),
        (
            "systemd driver: Burstable container (containerd)",
            format!(
                "/kubepods.slice/kubepods-burstable.slice/{burstable_pod}/cri-containerd-{C}.scope"
            ),
            Want {
                kind: Kind::Container,
                name: C_SHORT,
                unit: Some(s(format!("cri-containerd-{C}.scope"))),
                slice: Some(burstable_pod),
                container: Some(C),
                runtime: Some(Runtime::Containerd),
                pod: Some(P),
                qos: Some(QosClass::Burstable),
                ..NONE
            },
        ),
        (
            "systemd driver: Guaranteed pods sit directly in kubepods.slice",
            format!("/kubepods.slice/kubepods-pod{P_}.slice/cri-containerd-{C}.scope"),
            Want {
                kind: Kind::Container,
                name: C_SHORT,
                unit: Some(s(format!("cri-containerd-{C}.scope"))),
                slice: Some(s(format!("kubepods-pod{P_}.slice"))),
                container: Some(C),
                runtime: Some(Runtime::Containerd),
                pod: Some(P),
                qos: Some(QosClass::Guaranteed),
                ..NONE
            },
        ),
        (
            "systemd driver: BestEffort container (CRI-O)",
            format!("/kubepods.slice/kubepods-besteffort.slice/{besteffort_pod}/crio-{C}.scope"),
            Want {
                kind: Kind::Container,
                name: C_SHORT,
                unit: Some(s(format!("crio-{C}.scope"))),
                slice: Some(besteffort_pod),
                container: Some(C),
                runtime: Some(Runtime::CriO),
                pod: Some(P),
                qos: Some(QosClass::BestEffort),
                ..NONE
            },
        ),
        (
            "CRI-O: conmon's scope",
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/{besteffort_pod}/crio-conmon-{C}.scope"
            ),
            Want {
                kind: Kind::ContainerMonitor,
                name: s(format!("conmon-{C_SHORT}")),
                unit: Some(s(format!("crio-conmon-{C}.scope"))),
                slice: Some(besteffort_pod),
                container: Some(C),
                runtime: Some(Runtime::CriO),
                pod: Some(P),
                qos: Some(QosClass::BestEffort),
                ..NONE
            },
        ),
        (
            "CRI-O: the payload's leaf",
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/{besteffort_pod}/crio-{C}.scope/container"
            ),
            Want {
                kind: Kind::Subgroup,
                name: s(format!("{C_SHORT}/container")),
                unit: Some(s(format!("crio-{C}.scope"))),
                slice: Some(besteffort_pod),
                container: Some(C),
                runtime: Some(Runtime::CriO),
                pod: Some(P),
                qos: Some(QosClass::BestEffort),
                ..NONE
            },
        ),
        (
            "CRI-O, cgroupfs",
            format!("/kubepods/besteffort/pod{P}/crio-{C}"),
            Want {
                kind: Kind::Container,
                name: C_SHORT,
                container: Some(C),
                runtime: Some(Runtime::CriO),
                pod: Some(P),
                qos: Some(QosClass::BestEffort),
                ..NONE
            },
        ),
        (
            "cri-dockerd, systemd driver",
            format!("/kubepods.slice/kubepods-besteffort.slice/{besteffort_pod}/docker-{D}.scope"),
            Want {
                kind: Kind::Container,
                name: D_SHORT,
                unit: Some(s(format!("docker-{D}.scope"))),
                slice: Some(besteffort_pod),
                container: Some(D),
                runtime: Some(Runtime::Docker),
                pod: Some(P),
                qos: Some(QosClass::BestEffort),
                ..NONE
            },
        ),
        (
            // kubernetes/community design-proposals/node/pod-resource-management.md:
            // "the cgroup name /burstable/pod123-456 is translated to a
            // transient slice with the name burstable-pod123_456.slice …
            // /burstable.slice/burstable-pod123_456.slice".
            "Kubernetes pod-level resource management design",
            "/burstable.slice/burstable-pod123_456.slice".into(),
            Want {
                kind: Kind::Pod,
                name: "pod:123-456",
                unit: Some("burstable-pod123_456.slice"),
                slice: Some("burstable.slice"),
                pod: Some("123-456"),
                qos: Some(QosClass::Burstable),
                ..NONE
            },
        ),
        (
            "static pod: the UID is the manifest's hash",
            format!("/kubepods/burstable/pod6e1b4d0f9a8c7b6a5d4e3f2a1b0c9d8e/{C}"),
            Want {
                kind: Kind::Container,
                name: C_SHORT,
                container: Some(C),
                pod: Some("6e1b4d0f9a8c7b6a5d4e3f2a1b0c9d8e"),
                qos: Some(QosClass::Burstable),
                ..NONE
            },
        ),
        (
            // kind/minikube: the node is a Docker container whose kubelet
            // has cgroup root kubelet.slice.
            "nested: kind node, systemd driver",
            format!(
                "/system.slice/docker-{D}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{P_}.slice/cri-containerd-{C}.scope"
            ),
            Want {
                kind: Kind::Container,
                name: C_SHORT,
                unit: Some(s(format!("cri-containerd-{C}.scope"))),
                slice: Some(s(format!("kubelet-kubepods-burstable-pod{P_}.slice"))),
                container: Some(C),
                runtime: Some(Runtime::Containerd),
                pod: Some(P),
                qos: Some(QosClass::Burstable),
                ..NONE
            },
        ),
        (
            "nested: kind node, cgroupfs driver",
            format!("/system.slice/docker-{D}.scope/kubepods/besteffort/pod{P}/{C}"),
            Want {
                kind: Kind::Container,
                name: C_SHORT,
                unit: Some(s(format!("docker-{D}.scope"))),
                slice: Some("system.slice"),
                container: Some(C),
                pod: Some(P),
                qos: Some(QosClass::BestEffort),
                ..NONE
            },
        ),
        (
            "nested: kind node's pod",
            format!("/system.slice/docker-{D}.scope/kubepods/besteffort/pod{P}"),
            Want {
                kind: Kind::Pod,
                name: P_NAME,
                unit: Some(s(format!("docker-{D}.scope"))),
                slice: Some("system.slice"),
                container: Some(D),
                runtime: Some(Runtime::Docker),
                pod: Some(P),
                qos: Some(QosClass::BestEffort),
                ..NONE
            },
        ),
        (
            // kubelet on cgroupfs, containerd with SystemdCgroup = true: the
            // runtime creates the cgroupsPath as one directory.
            "driver mismatch: slice:prefix:id",
            format!(
                "/system.slice/containerd.service/kubepods-burstable-pod{P_}.slice:cri-containerd:{C}"
            ),
            Want {
                kind: Kind::Container,
                name: C_SHORT,
                unit: Some("containerd.service"),
                slice: Some("system.slice"),
                container: Some(C),
                runtime: Some(Runtime::Containerd),
                pod: Some(P),
                qos: Some(QosClass::Burstable),
                ..NONE
            },
        ),
        (
            "not a pod: podman under kubepods",
            "/kubepods/podman".into(),
            Want {
                kind: Kind::Other,
                name: "podman",
                ..NONE
            },
        ),
    ]);
}

#[test]
fn garbage_falls_back_to_the_path() {
    let long = "a".repeat(100_000);
    check_table(vec![
        (
            "empty",
            "".into(),
            Want {
                kind: Kind::Root,
                name: "/",
                ..NONE
            },
        ),
        (
            "only slashes",
            "///".into(),
            Want {
                kind: Kind::Root,
                name: "/",
                ..NONE
            },
        ),
        (
            "relative",
            "garbage".into(),
            Want {
                kind: Kind::Other,
                name: "garbage",
                ..NONE
            },
        ),
        (
            "escape cut short",
            r"/a\x4.service".into(),
            Want {
                kind: Kind::Service,
                name: r"a\x4.service",
                unit: Some(r"a\x4.service"),
                ..NONE
            },
        ),
        (
            "escape with non-hex digits",
            r"/system.slice/foo\xZZ.service".into(),
            Want {
                kind: Kind::Service,
                name: r"foo\xZZ.service",
                unit: Some(r"foo\xZZ.service"),
                slice: Some("system.slice"),
                ..NONE
            },
        ),
        (
            "escape at the very end",
            r"/x/foo\x".into(),
            Want {
                kind: Kind::Other,
                name: r"foo\x",
                ..NONE
            },
        ),
        (
            "escaped newline stays escaped",
            r"/system.slice/foo\x0abar.service".into(),
            Want {
                kind: Kind::Service,
                name: r"foo\x0abar.service",
                unit: Some(r"foo\x0abar.service"),
                slice: Some("system.slice"),
                ..NONE
            },
        ),
        (
            "escaped slash stays escaped",
            r"/system.slice/a\x2fb.service".into(),
            Want {
                kind: Kind::Service,
                name: r"a\x2fb.service",
                unit: Some(r"a\x2fb.service"),
                slice: Some("system.slice"),
                ..NONE
            },
        ),
        (
            "escapes that decode to invalid UTF-8",
            r"/system.slice/foo\xff\xfe.service".into(),
            Want {
                kind: Kind::Service,
                name: r"foo\xff\xfe.service",
                unit: Some(r"foo\xff\xfe.service"),
                slice: Some("system.slice"),
                ..NONE
            },
        ),
        (
            "escaped C1 control and bidi override",
            r"/system.slice/a\xc2\x9bb\xe2\x80\xaec.service".into(),
            Want {
                kind: Kind::Service,
                name: r"a\x9bb\u{202e}c.service",
                unit: Some(r"a\x9bb\u{202e}c.service"),
                slice: Some("system.slice"),
                ..NONE
            },
        ),
        (
            "raw terminal escape in a directory name",
            "/tmp/\u{1b}[2Jboom".into(),
            Want {
                kind: Kind::Other,
                name: r"\x1b[2Jboom",
                ..NONE
            },
        ),
        (
            "lossily decoded bytes",
            String::from_utf8_lossy(b"/system.slice/\xff\xfe.service").into_owned(),
            Want {
                kind: Kind::Subgroup,
                name: "system.slice/\u{fffd}\u{fffd}.service",
                unit: Some("system.slice"),
                ..NONE
            },
        ),
        (
            "63 hex digits are no container id",
            format!("/docker/{}", &D[..63]),
            Want {
                kind: Kind::Other,
                name: s(D[..63].to_string()),
                ..NONE
            },
        ),
        (
            "uid overflow",
            "/user.slice/user-99999999999.slice".into(),
            Want {
                kind: Kind::Slice,
                name: "user-99999999999.slice",
                unit: Some("user-99999999999.slice"),
                slice: Some("user.slice"),
                ..NONE
            },
        ),
        (
            "a pod without a UID",
            "/kubepods/burstable/pod".into(),
            Want {
                kind: Kind::Other,
                name: "pod",
                qos: Some(QosClass::Burstable),
                ..NONE
            },
        ),
        (
            "a unit name over 255 bytes is none",
            format!("/system.slice/{}.service", "x".repeat(300)),
            Want {
                kind: Kind::Subgroup,
                name: s(bounded(format!("system.slice/{}.service", "x".repeat(300)))),
                unit: Some("system.slice"),
                ..NONE
            },
        ),
        (
            "a very long segment",
            format!("/{long}"),
            Want {
                kind: Kind::Other,
                name: s(bounded(long.clone())),
                ..NONE
            },
        ),
    ]);
    let huge = identify(&format!("/{long}"));
    assert_eq!(huge.name().len(), MAX_NAME_LEN);
    assert!(huge.name().ends_with('…'));
    let deep = "/a.slice".repeat(50_000) + "/x.service";
    assert_eq!(identify(&deep).name(), "x.service");
    let multibyte = "ö".repeat(200);
    assert!(identify(&format!("/{multibyte}")).name().len() <= MAX_NAME_LEN);
}

#[test]
fn labels_are_short_and_leave_workload_units_out() {
    let t3 = identify(r"/system.slice/system-t3\x2dserve.slice/t3-serve@wizard.service");
    assert_eq!(
        t3.labels().pairs(),
        [
            ("unit", "t3-serve@wizard.service"),
            ("container", ""),
            ("pod", ""),
            ("namespace", "")
        ]
    );
    let mut ctr = identify(&format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{P_}.slice/cri-containerd-{C}.scope"
    ));
    let l = ctr.labels();
    assert_eq!(
        (l.unit, l.container, l.pod, l.namespace),
        ("", C_SHORT, P, "")
    );
    // What a file held: trimmed, and what is left made printable.
    ctr.set_namespace(Some("web\n"));
    assert_eq!(ctr.labels().namespace, "web");
    ctr.set_namespace(Some("we\u{1b}b"));
    assert_eq!(ctr.labels().namespace, r"we\x1bb");
    ctr.set_namespace(Some(""));
    assert_eq!(ctr.namespace(), None);
    let docker = identify(&format!("/system.slice/docker-{D}.scope"));
    assert_eq!(docker.labels().unit, "");
    assert_eq!(docker.labels().container, D_SHORT);
    let kind_pod = identify(&format!(
        "/system.slice/docker-{D}.scope/kubepods/besteffort/pod{P}/{C}"
    ));
    assert_eq!(kind_pod.labels().unit, "");
    assert_eq!(Labels::NAMES, t3.labels().pairs().map(|(k, _)| k));
}

#[test]
fn serializes_only_what_is_known() {
    let t3 = identify(r"/system.slice/system-t3\x2dserve.slice/t3-serve@wizard.service");
    assert_eq!(
        serde_json::to_value(&t3).unwrap(),
        serde_json::json!({
            "kind": "service",
            "name": "t3-serve@wizard.service",
            "unit": "t3-serve@wizard.service",
            "template": "t3-serve@.service",
            "instance": "wizard",
            "slice": "system-t3-serve.slice",
            "slice_escaped": r"system-t3\x2dserve.slice",
        })
    );
    let mut crio = identify(&format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{P_}.slice/crio-conmon-{C}.scope"
    ));
    crio.set_namespace(Some("shop"));
    let v = serde_json::to_value(&crio).unwrap();
    assert_eq!(v["kind"], "container_monitor");
    assert_eq!(v["runtime"], "cri-o");
    assert_eq!(v["qos"], "BestEffort");
    assert_eq!(v["pod_uid"], P);
    assert_eq!(v["namespace"], "shop");
    assert!(v.get("uid").is_none());
    assert_eq!(
        serde_json::to_value(identify("/")).unwrap(),
        serde_json::json!({"kind": "root", "name": "/"})
    );
    assert_eq!(t3.to_string(), "t3-serve@wizard.service");
    assert_eq!(Kind::UserManager.to_string(), "user_manager");
    assert_eq!(Runtime::CriO.as_str(), "cri-o");
    assert_eq!(QosClass::BestEffort.as_str(), "BestEffort");
}

#[test]
fn globs_select_by_name() {
    let t3_path = r"/system.slice/system-t3\x2dserve.slice/t3-serve@wizard.service";
    let t3 = identify(t3_path);
    let unit = NameGlob::new(NameField::Unit, "t3-serve@*.service").unwrap();
    assert!(unit.matches(&t3));
    assert!(!unit.matches(&identify(&format!("{t3_path}/payload"))));
    assert!(!unit.matches(&identify("/user.slice/user-1000.slice/user@1000.service")));
    assert!(!unit.matches(&identify("/system.slice/t3-serve.service")));
    // A slice by its readable name or systemd's spelling.
    let slice = identify(r"/system.slice/system-t3\x2dserve.slice");
    assert!(
        NameGlob::new(NameField::Unit, "system-t3-serve.slice")
            .unwrap()
            .matches(&slice)
    );
    assert!(
        NameGlob::new(NameField::Unit, r"system-t3\x2dserve.slice")
            .unwrap()
            .matches(&slice)
    );
    assert!(
        NameGlob::new(NameField::Unit, "user-*.slice")
            .unwrap()
            .matches(&identify("/user.slice/user-1000.slice"))
    );

    let docker = identify(&format!("/docker.slice/docker-{D}.scope"));
    for p in [D, D_SHORT, "ae836c95*"] {
        assert!(
            NameGlob::new(NameField::Container, p)
                .unwrap()
                .matches(&docker),
            "{p}"
        );
    }
    assert!(
        NameGlob::new(NameField::Unit, "docker-*.scope")
            .unwrap()
            .matches(&docker)
    );
    let conmon = identify(&format!("/machine.slice/libpod-conmon-{C}.scope"));
    assert!(
        !NameGlob::new(NameField::Container, "*")
            .unwrap()
            .matches(&conmon)
    );

    let pod = identify(&format!("/kubepods/burstable/pod{P}"));
    let by_pod = NameGlob::new(NameField::Pod, "8e3f1a52-*").unwrap();
    assert!(by_pod.matches(&pod));
    assert!(!by_pod.matches(&identify(&format!("/kubepods/burstable/pod{P}/{C}"))));
    assert!(
        NameGlob::new(NameField::Name, "pod:*")
            .unwrap()
            .matches(&pod)
    );
    // `*` stays inside one part of a display name.
    assert!(
        !NameGlob::new(NameField::Name, "*")
            .unwrap()
            .matches(&identify(&format!("{t3_path}/payload")))
    );

    assert_eq!("unit".parse::<NameField>(), Ok(NameField::Unit));
    assert!(
        "cgroup"
            .parse::<NameField>()
            .unwrap_err()
            .contains("cgroup")
    );
    assert!(
        NameGlob::new(NameField::Unit, "")
            .unwrap_err()
            .contains("empty unit glob")
    );
    let e = NameGlob::new(NameField::Pod, "[ab").unwrap_err();
    assert!(e.contains("pod") && e.contains("[ab"), "{e}");
    assert_eq!(unit.to_string(), r#"unit = "t3-serve@*.service""#);
    assert_eq!(
        (unit.field(), unit.pattern()),
        (NameField::Unit, "t3-serve@*.service")
    );
}

#[test]
fn ids_in_the_table_are_real_lengths() {
    assert_eq!(D.len(), 64);
    assert_eq!(C.len(), 64);
    assert_eq!(P.len(), 36);
    assert_eq!(P.replace('-', "_"), P_);
}

/// xorshift64: a fixed, dependency-free stream of pseudo-random numbers.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn assert_sane(path: &str, globs: &[NameGlob]) {
    let id = identify(path);
    let name = id.name();
    assert!(!name.is_empty(), "{path:?}");
    assert!(name.len() <= MAX_NAME_LEN, "{path:?}");
    assert!(!name.chars().any(needs_escape), "{path:?} → {name:?}");
    for v in id.labels().pairs().map(|(_, v)| v) {
        assert!(
            v.len() <= MAX_NAME_LEN && !v.chars().any(needs_escape),
            "{path:?}"
        );
    }
    for glob in globs {
        glob.matches(&id);
    }
    serde_json::to_string(&id).unwrap();
    assert_eq!(identify(path), id, "not deterministic: {path:?}");
}

#[test]
fn random_bytes_never_panic_and_always_have_a_name() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let globs: Vec<NameGlob> = [
        NameField::Unit,
        NameField::Container,
        NameField::Pod,
        NameField::Name,
    ]
    .into_iter()
    .map(|f| NameGlob::new(f, "*").unwrap())
    .collect();
    // Raw bytes, as a lossy path.
    for _ in 0..5_000 {
        let len = rng.below(300);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        assert_sane(&String::from_utf8_lossy(&bytes), &globs);
    }
    // Pieces of real shapes, shuffled, to get past the first checks.
    let pieces: &[&str] = &[
        "/",
        "/",
        "/",
        "-",
        "_",
        ".",
        ":",
        "@",
        "\\x",
        "\\x2d",
        "\\x4",
        "\\xZZ",
        "\\xc3",
        "\\xb6",
        "\\x0a",
        "\\x1b",
        "\\xe2\\x80\\xae",
        ".slice",
        ".service",
        ".scope",
        ".socket",
        "user",
        "user-1000",
        "session-",
        "3",
        "kubepods",
        "burstable",
        "besteffort",
        "pod",
        P,
        P_,
        D,
        C,
        "docker-",
        "crio-",
        "crio-conmon-",
        "libpod-",
        "libpod-conmon-",
        "cri-containerd-",
        "docker",
        "containerd",
        "libpod_parent",
        "ö",
        "\u{202e}",
        "\u{1b}",
        "\u{0}",
    ];
    for _ in 0..20_000 {
        let n = rng.below(24);
        let path: String = (0..n).map(|_| pieces[rng.below(pieces.len())]).collect();
        assert_sane(&path, &globs);
    }
}

/// What enrichment learned renames: a container by its name, its pod's
/// too, a user's cgroups with the user's name; labels keep the path's
/// values (the namespace aside), so no new series.
#[test]
fn enrichment_renames_and_keeps_labels() {
    let mut known = Known::default();
    let docker = format!("/docker.slice/docker-{D}.scope");
    let ctr = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{P_}.slice/cri-containerd-{C}.scope"
    );
    let pod = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{P_}.slice");
    let user = "/user.slice/user-1000.slice/user@1000.service/app.slice/run-r42.scope";
    // Nothing known: the path's names, and these questions.
    let ids = [&docker, &ctr, &pod, &user.to_string()].map(|p| identify(p));
    assert_eq!(ids[0].name(), D_SHORT);
    assert_eq!(ids[2].name(), P_NAME);
    let asks: Vec<Ask> = ids.iter().flat_map(|i| known.asks(i)).collect();
    assert!(asks.contains(&Ask::Container {
        id: D.into(),
        runtime: Some(Runtime::Docker),
        owner: None
    }));
    assert!(asks.contains(&Ask::Pod(P.into())));
    assert!(asks.contains(&Ask::User(1000)));

    assert!(known.learn(Learned::Container {
        id: D.into(),
        names: ContainerNames {
            name: Some("t3-indexer".into()),
            ..Default::default()
        },
    }));
    assert!(known.learn(Learned::Container {
        id: C.into(),
        names: ContainerNames {
            name: Some("worker".into()),
            pod_uid: Some(P.into()),
            pod: PodNames {
                name: Some("etl-28641".into()),
                namespace: Some("batch".into()),
            },
        },
    }));
    assert!(known.learn(Learned::User {
        uid: 1000,
        name: "wizard".into()
    }));
    // The same fact again changes nothing.
    assert!(!known.learn(Learned::User {
        uid: 1000,
        name: "wizard".into()
    }));
    let named: Vec<Identity> = [&docker, &ctr, &pod, &user.to_string()]
        .iter()
        .map(|p| {
            let mut i = identify(p);
            known.apply(&mut i);
            i
        })
        .collect();
    assert_eq!(named[0].name(), "t3-indexer");
    assert_eq!(named[0].container_name(), Some("t3-indexer"));
    assert_eq!(named[1].name(), "batch/etl-28641/worker");
    assert_eq!(named[2].name(), "batch/etl-28641");
    assert_eq!(named[2].namespace(), Some("batch"));
    assert_eq!(named[3].name(), "run-r42.scope (wizard)");
    assert_eq!(named[3].user(), Some("wizard"));
    // The pod's own cgroup learned its names from its container.
    assert!(known.answers(&Ask::Pod(P.into())));
    for (a, b) in ids.iter().zip(&named) {
        let (la, lb) = (a.labels(), b.labels());
        assert_eq!(
            (la.unit, la.container, la.pod),
            (lb.unit, lb.container, lb.pod)
        );
    }
    assert_eq!(named[1].labels().namespace, "batch");
    // Below a named container, a subgroup keeps the container's name.
    let mut sub = identify(&format!("{docker}/payload"));
    known.apply(&mut sub);
    assert_eq!(sub.name(), "t3-indexer/payload");
    // JSON carries what enrichment added.
    let v = serde_json::to_value(&named[1]).unwrap();
    assert_eq!(v["container_name"], "worker");
    assert_eq!(v["pod_name"], "etl-28641");
    assert_eq!(v["namespace"], "batch");
    // The filter's words hold every name, lowercase.
    let words = named[1].search_text();
    for w in ["worker", "etl-28641", "batch", C, P] {
        assert!(words.contains(w), "{w} in {words}");
    }
    // describe: the name and the path, or the path alone.
    assert_eq!(named[0].describe(&docker), format!("t3-indexer ({docker})"));
    assert_eq!(identify("/livelock").describe("/livelock"), "/livelock");
}

/// A runtime's answer is untrusted: control characters, bidi overrides and
/// huge values come out printable and bounded; the tables stop growing.
#[test]
fn hostile_answers_stay_printable_and_bounded() {
    let mut known = Known::default();
    known.learn(Learned::Container {
        id: D.into(),
        names: ContainerNames {
            name: Some(format!("\u{1b}[2J{}\u{202e}", "x".repeat(1000))),
            ..Default::default()
        },
    });
    let mut id = identify(&format!("/docker.slice/docker-{D}.scope"));
    known.apply(&mut id);
    assert!(id.name().len() <= MAX_NAME_LEN, "{}", id.name().len());
    assert!(!id.name().chars().any(needs_escape), "{:?}", id.name());
    assert!(id.name().starts_with(r"\x1b[2J"));
    // Empty names are no names.
    assert!(!known.learn(Learned::User {
        uid: 7,
        name: "  ".into()
    }));
    for i in 0..known::MAX_ENTRIES as u32 + 10 {
        known.learn(Learned::User {
            uid: i + 100,
            name: format!("u{i}"),
        });
    }
    let mut late = identify(&format!(
        "/user.slice/user-{}.slice",
        known::MAX_ENTRIES as u32 + 105
    ));
    known.apply(&mut late);
    assert_eq!(late.user(), None, "past the cap, facts are dropped");
}

#[test]
fn retain_keeps_what_the_cgroups_name_and_a_kept_containers_pod() {
    let pod = "2c1d3c5e-0b7a-4a6e-9b8d-5f7e8a1c2d3e";
    let mut known = Known::default();
    for (id, name) in [(D, "kept"), ("1".repeat(64).as_str(), "gone")] {
        known.learn(Learned::Container {
            id: id.into(),
            names: ContainerNames {
                name: Some(name.into()),
                pod_uid: Some(pod.into()),
                pod: PodNames {
                    name: Some("web-0".into()),
                    namespace: Some("shop".into()),
                },
            },
        });
    }
    for uid in [1000, 1001] {
        known.learn(Learned::User {
            uid,
            name: format!("u{uid}"),
        });
    }
    assert_eq!(known.len(), 5);
    // Only the container and one user's slice are left; the path of the
    // container does not name its pod, its facts do.
    let ids = [
        identify(&format!("/docker.slice/docker-{D}.scope")),
        identify("/user.slice/user-1000.slice"),
    ];
    let named = Named::of(&ids);
    assert!(known.retain(&named));
    assert_eq!(known.len(), 3, "{known:?}");
    assert!(known.answers(&Ask::User(1000)) && !known.answers(&Ask::User(1001)));
    assert!(known.answers(&Ask::Pod(pod.into())));
    assert!(!known.retain(&named), "nothing more to forget");
    let mut ctr = ids[0].clone();
    known.apply(&mut ctr);
    assert_eq!(ctr.name(), "shop/web-0/kept");
    // Nothing named: nothing kept.
    assert!(known.retain(&Named::default()));
    assert!(known.is_empty());
}
