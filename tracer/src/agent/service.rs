//! The agent and its service manager: systemd's notify protocol
//! (`sd_notify(3)`: datagrams of `KEY=value` lines to `$NOTIFY_SOCKET`),
//! and the one-agent-per-host lock.
//!
//! - `READY=1` once the probes are attached and the first sample is taken
//!   (`Type=notify`), `RELOADING=1` … `READY=1` around a reload,
//!   `STOPPING=1`, and a `STATUS=` line for `systemctl status`.
//! - The watchdog (`WatchdogSec=`): [`Watchdog::ping`] is called by the
//!   kill path, today the agent's loop on every beat, so a loop that stops
//!   turning stops the pings and systemd restarts the agent. Whoever owns
//!   the kill path owns the call: a cheap, lock-free, allocation-free send
//!   at most every third of the watchdog interval.
//! - Without `$NOTIFY_SOCKET` (not under systemd) every call does nothing.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::mono_now_ns;

/// Where the lock lives by default: the unit's RuntimeDirectory.
pub const LOCK_FILE: &str = "/run/memtrace/agent.lock";

/// The socket systemd listens on, if the agent runs under it.
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    socket: Option<Arc<(UnixDatagram, SocketAddr)>>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET` (a path, or `@name` in the abstract
    /// namespace). A socket that cannot be set up is logged and ignored.
    pub fn from_env() -> Self {
        let Some(addr) = std::env::var_os("NOTIFY_SOCKET") else {
            return Self::default();
        };
        match connect(&addr.to_string_lossy()) {
            Ok(s) => Self {
                socket: Some(Arc::new(s)),
            },
            Err(e) => {
                log::warn!("NOTIFY_SOCKET {}: {e}; systemd is not told", addr.display());
                Self::default()
            }
        }
    }

    /// Sends one message; never blocks (a full socket drops it).
    pub fn send(&self, message: &str) {
        if let Some(s) = &self.socket
            && let Err(e) = s.0.send_to_addr(message.as_bytes(), &s.1)
            && e.kind() != std::io::ErrorKind::WouldBlock
        {
            log::debug!("sd_notify: {e}");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    pub fn reloading(&self) {
        let usec = mono_now_ns() / 1000;
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// The watchdog systemd asked for, if any.
    pub fn watchdog(&self) -> Watchdog {
        let interval = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        Watchdog {
            socket: self.socket.clone().filter(|_| interval.is_some()),
            every_ns: interval.map_or(u64::MAX, |i| i.as_nanos() as u64 / 3),
            last_ns: Arc::new(AtomicU64::new(0)),
        }
    }
}

fn connect(addr: &str) -> std::io::Result<(UnixDatagram, SocketAddr)> {
    let to = match addr.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        }
        None => SocketAddr::from_pathname(addr)?,
    };
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    Ok((sock, to))
}

/// `WATCHDOG_USEC`, when it is meant for this process (`WATCHDOG_PID`
/// unset or ours).
fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    match pid.map(|p| p.trim().parse::<u32>()) {
        None => {}
        Some(Ok(p)) if p == me => {}
        Some(_) => return None,
    }
    Some(Duration::from_micros(usec))
}

/// Keeps systemd's watchdog fed, from the kill path.
#[derive(Clone, Debug)]
pub struct Watchdog {
    socket: Option<Arc<(UnixDatagram, SocketAddr)>>,
    every_ns: u64,
    last_ns: Arc<AtomicU64>,
}

impl Watchdog {
    /// Tells systemd the kill path is alive, at most every third of the
    /// watchdog interval. Call it where kills are delivered, as often as
    /// that path turns.
    pub fn ping(&self) {
        let Some(s) = &self.socket else { return };
        let now = mono_now_ns();
        let last = self.last_ns.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < self.every_ns {
            return;
        }
        self.last_ns.store(now, Ordering::Relaxed);
        let _ = s.0.send_to_addr(b"WATCHDOG=1", &s.1);
    }

    /// Whether systemd watches this process.
    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }
}

/// Held while the agent runs: a second agent on the host would act on the
/// same cgroups and share the kill log and the flight recorder.
#[derive(Debug)]
pub struct HostLock {
    _file: File,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another memtrace agent is running on this host (pid {pid}, holding {path}): one agent \
         per host, or both would kill; stop it first (systemctl stop memtrace-agent)"
    )]
    Held { pid: String, path: String },
    #[error("cannot take the agent lock {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl HostLock {
    /// Takes the lock (`flock`, released by the kernel when the agent
    /// exits however it exits) and writes this pid into the file.
    pub fn acquire(path: &Path) -> Result<Self, LockError> {
        let io = |source| LockError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        // SAFETY: flock on an fd this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::WouldBlock {
                return Err(io(e));
            }
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(LockError::Held {
                pid: if pid.is_empty() { "?" } else { pid }.to_string(),
                path: path.display().to_string(),
            });
        }
        let me = std::process::id();
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{me}"))
            .map_err(io)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_interval_is_ours_or_none() {
        let me = 4242;
        assert_eq!(
            watchdog_interval(Some("20000000"), None, me),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            watchdog_interval(Some("20000000"), Some("4242"), me),
            Some(Duration::from_secs(20))
        );
        assert_eq!(watchdog_interval(Some("20000000"), Some("1"), me), None);
        assert_eq!(watchdog_interval(Some("0"), None, me), None);
        assert_eq!(watchdog_interval(Some("soon"), None, me), None);
        assert_eq!(watchdog_interval(None, Some("4242"), me), None);
    }

    /// The messages reach a real datagram socket, as systemd's would, and
    /// the watchdog rate-limits itself.
    #[test]
    fn messages_reach_the_socket() {
        let dir = std::env::temp_dir().join(format!("memtrace-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let n = Notifier {
            socket: Some(Arc::new(connect(path.to_str().unwrap()).unwrap())),
        };
        let recv = || {
            let mut buf = [0u8; 256];
            let len = listener.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..len]).to_string()
        };
        n.ready("2 budgets");
        assert_eq!(recv(), "READY=1\nSTATUS=2 budgets");
        n.reloading();
        assert!(recv().starts_with("RELOADING=1\nMONOTONIC_USEC="));
        let w = Watchdog {
            socket: n.socket.clone(),
            every_ns: Duration::from_secs(3600).as_nanos() as u64,
            last_ns: Arc::new(AtomicU64::new(0)),
        };
        w.ping();
        w.ping();
        n.stopping();
        assert_eq!(recv(), "WATCHDOG=1");
        assert_eq!(
            recv(),
            "STOPPING=1",
            "the second ping came too soon to send"
        );
        // Not under systemd: nothing happens, nothing fails.
        Notifier::default().ready("x");
        Notifier::default().watchdog().ping();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_second_lock_is_refused_with_the_holder() {
        let path = std::env::temp_dir()
            .join(format!("memtrace-lock-{}", std::process::id()))
            .join("agent.lock");
        let first = HostLock::acquire(&path).unwrap();
        let err = HostLock::acquire(&path).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())) && err.contains("agent.lock"),
            "{err}"
        );
        drop(first);
        let again = HostLock::acquire(&path);
        assert!(again.is_ok(), "released with its holder");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
