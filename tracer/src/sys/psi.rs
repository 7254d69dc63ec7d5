//! Host memory pressure with kernel PSI triggers: `/proc/pressure/memory`
//! polled for POLLPRI on a thread of its own, so a stall is noticed within
//! its window, not at the next sample. What a fired trigger means is
//! decided in [`crate::policy::host`].

use std::io::Write;
use std::os::fd::AsRawFd;

use crate::config::HostConfig;

/// Which PSI trigger fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsiLine {
    Some,
    Full,
}

impl PsiLine {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Some => "some",
            Self::Full => "full",
        }
    }
}

/// Starts a thread that arms PSI triggers on `/proc/pressure/memory` and
/// sends a message each time one fires. Errors if the kernel has no PSI or
/// refuses triggers.
pub fn start_psi_triggers(
    cfg: &HostConfig,
    tx: tokio::sync::mpsc::UnboundedSender<PsiLine>,
) -> std::io::Result<()> {
    let window = cfg.psi_window.0.as_micros();
    let mut files = Vec::new();
    for (line, stall) in [
        (PsiLine::Some, cfg.psi_some_stall.0),
        (PsiLine::Full, cfg.psi_full_stall.0),
    ] {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/proc/pressure/memory")?;
        let spec = format!("{} {} {}\0", line.as_str(), stall.as_micros(), window);
        f.write_all(spec.as_bytes()).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "PSI trigger `{}` refused: {e} (without CAP_SYS_RESOURCE the window must be a multiple of 2 s)",
                    spec.trim_end_matches('\0')
                ),
            )
        })?;
        files.push((line, f));
    }
    std::thread::Builder::new()
        .name("psi-triggers".into())
        // It polls and formats a line now and then: a small stack.
        .stack_size(128 << 10)
        .spawn(move || {
            let mut fds: Vec<libc::pollfd> = files
                .iter()
                .map(|(_, f)| libc::pollfd {
                    fd: f.as_raw_fd(),
                    events: libc::POLLPRI,
                    revents: 0,
                })
                .collect();
            loop {
                // SAFETY: fds points to valid pollfd entries for the call.
                let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 1000) };
                if n < 0 {
                    if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    log::error!(
                        "PSI trigger poll failed: {}",
                        std::io::Error::last_os_error()
                    );
                    return;
                }
                if tx.is_closed() {
                    return;
                }
                for (i, p) in fds.iter().enumerate() {
                    if p.revents & libc::POLLERR != 0 {
                        log::error!("PSI trigger file closed by the kernel");
                        return;
                    }
                    if p.revents & libc::POLLPRI != 0 && tx.send(files[i].0).is_err() {
                        return;
                    }
                }
            }
        })?;
    Ok(())
}
