//! `memtrace check`: what this kernel allows, and what is degraded and why.

use std::io::Write;

use clap::Args;
use serde_json::json;

use crate::kernel::{CgroupMode, CgroupVersion, KernelInfo};
use crate::probe::{self, Capabilities, LoadError, LoadOptions, Tracer};

use super::EXIT_UNSUPPORTED;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Print one JSON document instead of the report.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: CheckArgs) -> anyhow::Result<u8> {
    let opts = LoadOptions::from_env()?;
    let result = match probe::check_privileges() {
        Ok(()) => Tracer::load(&opts).map(|t| t.caps),
        Err(e) => Err(e),
    };
    let out = std::io::stdout();
    let mut out = out.lock();
    match result {
        Ok(caps) => {
            let ok = caps.all_attached();
            if args.json {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&json_report(&caps, None))?
                )?;
            } else {
                write_report(&mut out, &caps)?;
            }
            Ok(if ok { 0 } else { EXIT_UNSUPPORTED })
        }
        Err(e @ (LoadError::Privileges(_) | LoadError::Unsupported(_))) => {
            // Still say what can be known without loading anything.
            let kernel = KernelInfo::detect();
            if args.json {
                let v = json!({
                    "ok": false,
                    "error": e.to_string(),
                    "kernel": kernel,
                });
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                write_kernel(&mut out, &kernel, None)?;
                writeln!(out, "\nprobes      not tested: {e}")?;
            }
            Ok(EXIT_UNSUPPORTED)
        }
        Err(e) => Err(e.into()),
    }
}

/// This process's cgroup namespace root in the memory hierarchy, when it
/// is not the hierarchy's root (a container).
fn cgroupns_root(k: &KernelInfo) -> Option<&'static str> {
    let m = k.cgroups.memory.as_ref()?;
    crate::sys::cgroupns::detect(&m.mount, m.version)
}

fn json_report(caps: &Capabilities, error: Option<&str>) -> serde_json::Value {
    json!({
        "ok": caps.all_attached() && error.is_none(),
        "error": error,
        "kernel": caps.kernel,
        "cgroup_namespace_root": cgroupns_root(&caps.kernel).unwrap_or("/"),
        "throttle_function": caps.throttle_function,
        "probes": caps.probes,
        "btf_problems": caps.btf_problems,
        "degraded": caps.degraded,
    })
}

fn write_kernel(
    out: &mut impl Write,
    k: &KernelInfo,
    throttle_fn: Option<&str>,
) -> std::io::Result<()> {
    writeln!(out, "kernel      {} (host {})", k.release, k.hostname)?;
    writeln!(
        out,
        "btf         {}",
        if k.btf {
            format!("yes ({})", crate::kernel::btf::VMLINUX_BTF)
        } else {
            "no: kernel struct offsets unknown, cgroups cannot be identified".into()
        }
    )?;
    let mode = match k.cgroups.mode {
        CgroupMode::Unified => "unified (v2 only)",
        CgroupMode::Legacy => "legacy (v1 only)",
        CgroupMode::Hybrid => "hybrid (v1 and v2)",
        CgroupMode::None => "none mounted",
    };
    let memory = match &k.cgroups.memory {
        Some(m) => format!(
            "memory controller on {} at {}",
            match m.version {
                CgroupVersion::V1 => "v1",
                CgroupVersion::V2 => "v2",
            },
            m.mount.display()
        ),
        None => "no memory controller".into(),
    };
    writeln!(out, "cgroups     {mode}; {memory}")?;
    if let Some(root) = cgroupns_root(k) {
        writeln!(
            out,
            "            in a cgroup namespace rooted at {root}: processes' cgroups read relative to it"
        )?;
    }
    if let (CgroupMode::Hybrid, Some(v2)) = (k.cgroups.mode, &k.cgroups.v2_mount) {
        writeln!(out, "            v2 hierarchy at {}", v2.display())?;
    }
    writeln!(
        out,
        "psi         {}",
        if k.psi {
            "yes (/proc/pressure/memory)"
        } else {
            "no (kernel without CONFIG_PSI, or psi=0)"
        }
    )?;
    writeln!(
        out,
        "tracefs     {}",
        k.tracefs
            .as_ref()
            .map_or("not mounted".to_string(), |p| p.display().to_string())
    )?;
    if let Some(f) = throttle_fn {
        writeln!(out, "throttle fn {f}")?;
    }
    Ok(())
}

fn write_report(out: &mut impl Write, caps: &Capabilities) -> std::io::Result<()> {
    write_kernel(out, &caps.kernel, caps.throttle_function)?;
    writeln!(out, "\nprobes")?;
    for p in &caps.probes {
        let status = match p.attached {
            Some(m) => format!("ok  via {}", m.as_str()),
            None => "UNAVAILABLE".into(),
        };
        writeln!(out, "  {:<15} {:<24} {}", p.probe.name(), status, p.what)?;
        for a in &p.attempts {
            if let Some(err) = &a.error {
                writeln!(out, "      {} {}: {}", a.mechanism.as_str(), a.target, err)?;
            }
        }
    }
    if !caps.btf_problems.is_empty() {
        writeln!(out, "\nBTF gaps")?;
        for p in &caps.btf_problems {
            writeln!(out, "  - {p}")?;
        }
    }
    if caps.degraded.is_empty() {
        writeln!(out, "\nnothing degraded: every probe attached")?;
    } else {
        writeln!(out, "\ndegraded")?;
        for d in &caps.degraded {
            writeln!(out, "  - {d}")?;
        }
    }
    Ok(())
}
