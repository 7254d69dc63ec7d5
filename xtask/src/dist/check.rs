//! The package checks `cargo xtask test` runs on what `dist` built, as far
//! as a host without systemd as PID 1 allows: the binary is static and
//! names its commit; the package holds what it must, with the conffile
//! declared; lintian finds no error; the unit verifies and scores 3.0 or
//! better in `systemd-analyze security`; the man pages render; the
//! completions load in bash, zsh and fish; and dpkg installs it into a
//! scratch root, keeps an edited conffile across an upgrade, and purges it.
//! (Installing it in a Debian guest with systemd is the VM's job.)

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use super::package::{COMPLETIONS, CONFFILE, UNIT};
use super::{Artifacts, package};
use crate::cmd;

/// The exposure `systemd-analyze security` may give the unit at most.
const MAX_EXPOSURE: f64 = 3.0;

pub fn check(a: &Artifacts) -> Result<()> {
    let scratch = a.deb.with_extension("check");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    step("static binary", || static_binary(a))?;
    step("package contents", || contents(a))?;
    let root = scratch.join("root");
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(&a.deb).arg(&root))?;
    step("packaged configuration", || {
        cmd::run(
            Command::new(root.join("usr/bin/memtrace"))
                .args(["agent", "--check-config", "--config"])
                .arg(root.join(CONFFILE))
                .env_clear(),
        )
    })?;
    step("lintian", || lintian(&a.deb))?;
    step("systemd unit", || unit(&root))?;
    step("man pages", || man_pages(&root))?;
    step("shell completions", || completions(&root))?;
    step("install, upgrade, purge (dpkg --root)", || {
        install_upgrade_purge(a, &scratch)
    })?;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    f().with_context(|| format!("package check `{name}`"))?;
    eprintln!("package: {name}: ok");
    Ok(())
}

fn text(c: &mut Command) -> Result<String> {
    let line = format!("{c:?}");
    let out = c
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {line}"))?;
    if !out.status.success() {
        bail!(
            "{line} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// No interpreter, no shared libraries, stripped, and the version line of
/// this tree.
fn static_binary(a: &Artifacts) -> Result<()> {
    let headers = text(Command::new("readelf").arg("-lW").arg(&a.binary))?;
    ensure!(
        !headers.contains("INTERP"),
        "the binary asks for a dynamic loader:\n{headers}"
    );
    let dynamic = text(Command::new("readelf").arg("-dW").arg(&a.binary))?;
    ensure!(
        !dynamic.contains("(NEEDED)"),
        "the binary needs shared libraries:\n{dynamic}"
    );
    let sections = text(Command::new("readelf").arg("-SW").arg(&a.binary))?;
    ensure!(
        !sections.contains(".symtab") && !sections.contains(".debug_info"),
        "the binary is not stripped"
    );
    let version = text(Command::new(&a.binary).arg("--version"))?;
    ensure!(
        version.trim() == a.source.version_line(),
        "--version says `{}`, the tree is `{}`",
        version.trim(),
        a.source.version_line()
    );
    let size = std::fs::metadata(&a.binary)?.len();
    eprintln!(
        "package: {} is {:.1} MiB, static, stripped: {}",
        a.binary.display(),
        size as f64 / (1 << 20) as f64,
        version.trim()
    );
    Ok(())
}

fn contents(a: &Artifacts) -> Result<()> {
    let info = text(Command::new("dpkg-deb").arg("--info").arg(&a.deb))?;
    for want in [
        "Package: memtrace".to_string(),
        format!("Version: {}", a.source.version),
        "Architecture: amd64".into(),
        "conffiles".into(),
    ] {
        ensure!(
            info.contains(&want),
            "dpkg-deb --info lacks `{want}`:\n{info}"
        );
    }
    let conffiles = text(
        Command::new("dpkg-deb")
            .args(["-I"])
            .arg(&a.deb)
            .arg("conffiles"),
    )?;
    ensure!(
        conffiles.trim() == format!("/{CONFFILE}"),
        "conffiles: {conffiles}"
    );
    let list = text(Command::new("dpkg-deb").arg("--contents").arg(&a.deb))?;
    let mut want: Vec<String> = [
        "usr/bin/memtrace",
        UNIT,
        CONFFILE,
        "usr/share/man/man1/memtrace.1.gz",
        "usr/share/man/man1/memtrace-agent.1.gz",
        "usr/share/doc/memtrace/copyright",
        "usr/share/doc/memtrace/changelog.gz",
        "usr/share/doc/memtrace/user-guide.md",
        "usr/share/doc/memtrace/configuration.md",
        "usr/share/doc/memtrace/examples/prometheus-rules.yml",
        "usr/share/doc/memtrace/examples/grafana-dashboard.json",
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    want.extend(COMPLETIONS.iter().map(|(_, p)| (*p).to_string()));
    for path in &want {
        ensure!(
            list.lines().any(|l| l.ends_with(&format!("./{path}"))),
            "the package lacks /{path}:\n{list}"
        );
    }
    for line in list.lines() {
        ensure!(line.contains(" root/root "), "not owned by root: {line}");
    }
    Ok(())
}

fn lintian(deb: &Path) -> Result<()> {
    let out = Command::new("lintian")
        .args(["--fail-on", "error,warning", "--tag-display-limit", "0"])
        .arg(deb)
        .output()
        .context("running lintian (cargo xtask setup installs it)")?;
    let report = String::from_utf8_lossy(&out.stdout);
    if !report.trim().is_empty() {
        eprintln!("{report}");
    }
    ensure!(out.status.success(), "lintian found errors or warnings");
    Ok(())
}

/// `systemd-analyze verify` of the unit with its paths pointed into the
/// unpacked package (the binary and man pages it names must be there),
/// and the exposure score of the unit as shipped.
fn unit(root: &Path) -> Result<()> {
    let unit = root.join(UNIT);
    // `verify --root` would look for every unit of the boot in the
    // package; the host has those, the package has memtrace.
    let relocated = root.join("memtrace-agent.service");
    std::fs::write(
        &relocated,
        std::fs::read_to_string(&unit)?.replace(
            "/usr/bin/memtrace",
            &root.join("usr/bin/memtrace").display().to_string(),
        ),
    )?;
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&relocated)
        .env("MANPATH", root.join("usr/share/man"))
        .output()?;
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(
        out.status.success() && !said.contains("memtrace-agent.service"),
        "systemd-analyze verify:\n{said}"
    );
    let report = text(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&unit),
    )?;
    let score: f64 = report
        .lines()
        .find_map(|l| l.split("memtrace-agent.service: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no exposure level in:\n{report}"))?;
    eprintln!("package: systemd-analyze security: {score} (at most {MAX_EXPOSURE})");
    ensure!(
        score <= MAX_EXPOSURE,
        "the unit's exposure is {score}, above {MAX_EXPOSURE}:\n{report}"
    );
    Ok(())
}

/// Every page renders with `man -l`, without groff warnings, and has the
/// sections a man page has.
fn man_pages(root: &Path) -> Result<()> {
    let dir = root.join("usr/share/man/man1");
    let mut n = 0;
    for e in std::fs::read_dir(&dir)? {
        let page = e?.path();
        let out = Command::new("man")
            .args(["-l", "--warnings"])
            .arg(&page)
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80")
            .output()
            .context("running man (man-db)")?;
        let shown = String::from_utf8_lossy(&out.stdout);
        let warned = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success() && warned.trim().is_empty(),
            "man -l {}: {warned}",
            page.display()
        );
        for section in ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS"] {
            ensure!(
                shown.lines().any(|l| l.trim() == section),
                "{} has no {section}:\n{shown}",
                page.display()
            );
        }
        n += 1;
    }
    ensure!(n >= 9, "only {n} man pages in {}", dir.display());
    Ok(())
}

/// Each shell loads its script and completes `memtrace ag` to `agent`.
fn completions(root: &Path) -> Result<()> {
    let file = |shell: &str| -> PathBuf {
        let rel = COMPLETIONS
            .iter()
            .find(|(s, _)| *s == shell)
            .map_or("", |(_, p)| p);
        root.join(rel)
    };
    let bash = format!(
        "source {}; COMP_WORDS=(memtrace ag); COMP_CWORD=1; COMP_LINE='memtrace ag'; \
         COMP_POINT=11; _memtrace memtrace ag memtrace; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file("bash").display()
    );
    let got = text(Command::new("bash").args(["--norc", "--noprofile", "-c", &bash]))?;
    ensure!(
        got.lines().any(|l| l == "agent"),
        "bash completes `memtrace ag` to: {got}"
    );
    let zsh = format!(
        "autoload -Uz compinit && compinit -u -D && source {} && (( $+functions[_memtrace] )) && echo loaded",
        file("zsh").display()
    );
    let got = text(Command::new("zsh").args(["-f", "-c", &zsh]))?;
    ensure!(got.contains("loaded"), "zsh did not load _memtrace: {got}");
    let fish = format!(
        "source {}; complete -C 'memtrace ag'",
        file("fish").display()
    );
    let got = text(Command::new("fish").args(["--no-config", "-c", &fish]))?;
    ensure!(
        got.lines().any(|l| l.starts_with("agent")),
        "fish completes `memtrace ag` to: {got}"
    );
    Ok(())
}

/// dpkg into a scratch root (maintainer scripts run with DPKG_ROOT set and
/// touch nothing of this host): install, edit the conffile, upgrade to a
/// newer package, the edit is kept; remove keeps it, purge removes it.
fn install_upgrade_purge(a: &Artifacts, scratch: &Path) -> Result<()> {
    let root = scratch.join("dpkg-root");
    for dir in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "")?;
    let dpkg = |args: &[&str]| -> Result<String> {
        text(
            Command::new("dpkg")
                .arg(format!("--root={}", root.display()))
                .args([
                    "--force-script-chrootless",
                    "--force-not-root",
                    "--log=/dev/null",
                ])
                .args(args),
        )
    };
    dpkg(&["-i", &a.deb.display().to_string()])?;
    let conf = root.join(CONFFILE);
    let edited = format!(
        "{}\n# edited by the admin\n",
        std::fs::read_to_string(&conf).context("the conffile was not installed")?
    );
    std::fs::write(&conf, &edited)?;
    let newer = format!("{}+upgrade", a.source.version);
    let out = scratch.join("newer");
    std::fs::create_dir_all(&out)?;
    let deb = package::build_as(&a.source, &newer, &a.binary, &out)?;
    dpkg(&["-i", &deb.display().to_string()])?;
    let status = dpkg(&["-s", "memtrace"])?;
    ensure!(status.contains(&format!("Version: {newer}")), "{status}");
    ensure!(
        std::fs::read_to_string(&conf)? == edited,
        "the upgrade replaced the admin's {CONFFILE}"
    );
    ensure!(root.join("usr/bin/memtrace").is_file());
    dpkg(&["-r", "memtrace"])?;
    ensure!(
        !root.join("usr/bin/memtrace").exists(),
        "remove left the binary"
    );
    ensure!(conf.is_file(), "remove must keep the conffile");
    dpkg(&["-P", "memtrace"])?;
    ensure!(!conf.exists(), "purge must remove the conffile");
    Ok(())
}
