//! The agent's deadline timer: a timerfd on CLOCK_MONOTONIC armed at an
//! absolute instant, read through the async loop. tokio's own timer rounds
//! every sleep up to its next millisecond tick, which alone would be most
//! of the kill path's time from a budget's crossing to the signal; a
//! timerfd wakes at the instant asked (plus the thread's timer slack,
//! which [`Deadline::new`] sets to 1 µs).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

use crate::clock::mono_now_ns;

/// Timer slack for the agent's thread, ns: the kernel may otherwise defer
/// a wake-up by 50 µs to batch it with others.
const SLACK_NS: libc::c_ulong = 1_000;

pub struct Deadline {
    fd: AsyncFd<OwnedFd>,
    /// The instant the timerfd is armed for, if any.
    armed: Option<u64>,
}

impl Deadline {
    /// A disarmed timer (must be called inside the tokio runtime).
    pub fn new() -> std::io::Result<Self> {
        // SAFETY: plain flags; the result is checked.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: plain values. Failing leaves the default slack (50 µs).
        if unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, SLACK_NS) } != 0 {
            log::debug!(
                "could not lower the timer slack: {}",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: the OwnedFd stays open inside the AsyncFd for as long
        // as it is registered.
        let fd = unsafe { AsyncFd::register(fd) }?;
        Ok(Self { fd, armed: None })
    }

    /// Resolves at the monotonic instant `at` (ns), or never for `None`.
    /// Cancel-safe: the loop drops this future whenever another arm wins,
    /// and the timerfd stays armed for the next call with the same instant.
    pub async fn until(&mut self, at: Option<u64>) {
        let Some(at) = at else {
            return std::future::pending().await;
        };
        if self.armed != Some(at) && !self.arm(at) {
            // Arming failed (it cannot for a valid fd): tokio's coarser
            // timer rather than never, or a loop that spins.
            return sleep_until(at).await;
        }
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                self.armed = None;
                return sleep_until(at).await;
            };
            let mut expirations = 0u64;
            // SAFETY: reads 8 bytes into a u64 of this frame.
            let n = unsafe {
                libc::read(
                    self.fd.get_ref().as_raw_fd(),
                    std::ptr::from_mut(&mut expirations).cast(),
                    8,
                )
            };
            if n == 8 {
                // An expiry left over from an earlier instant does not count.
                if mono_now_ns() >= at {
                    self.armed = None;
                    return;
                }
                if !self.arm(at) {
                    return sleep_until(at).await;
                }
            } else {
                guard.clear_ready();
            }
        }
    }

    fn arm(&mut self, at: u64) -> bool {
        // 0 would disarm the timer: the earliest instant is 1 ns.
        let at = at.max(1);
        // SAFETY: all zeroes is a valid itimerspec (musl's timespec has
        // private padding, so it is filled field by field).
        let mut spec: libc::itimerspec = unsafe { std::mem::zeroed() };
        let (Ok(sec), Ok(nsec)) = (
            (at / 1_000_000_000).try_into(),
            (at % 1_000_000_000).try_into(),
        ) else {
            return false;
        };
        spec.it_value.tv_sec = sec;
        spec.it_value.tv_nsec = nsec;
        // SAFETY: a valid timerfd and itimerspec; the old value is not read.
        let ok = unsafe {
            libc::timerfd_settime(
                self.fd.get_ref().as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        } == 0;
        self.armed = ok.then_some(at);
        ok
    }
}

/// Sleeps until the monotonic instant `at` (ns) on tokio's timer, which
/// rounds up to the next millisecond: the fallback when the timerfd fails.
async fn sleep_until(at: u64) {
    let left = at.saturating_sub(mono_now_ns());
    tokio::time::sleep(std::time::Duration::from_nanos(left)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    }

    #[test]
    fn fires_at_the_instant_never_before() {
        runtime().block_on(async {
            let mut t = Deadline::new().expect("a timerfd");
            for delay_ns in [0, 2_000_000, 20_000_000] {
                let at = mono_now_ns() + delay_ns;
                t.until(Some(at)).await;
                assert!(mono_now_ns() >= at);
            }
        });
    }

    #[test]
    fn a_dropped_wait_leaves_no_early_expiry() {
        runtime().block_on(async {
            let mut t = Deadline::new().expect("a timerfd");
            // Armed for soon, abandoned after it expired unread.
            let soon = mono_now_ns() + 1_000_000;
            let _ = tokio::time::timeout(std::time::Duration::from_micros(1), t.until(Some(soon)))
                .await;
            std::thread::sleep(std::time::Duration::from_millis(5));
            let later = mono_now_ns() + 30_000_000;
            t.until(Some(later)).await;
            assert!(mono_now_ns() >= later);
        });
    }

    #[test]
    fn no_instant_never_fires() {
        runtime().block_on(async {
            let mut t = Deadline::new().expect("a timerfd");
            let waited =
                tokio::time::timeout(std::time::Duration::from_millis(50), t.until(None)).await;
            assert!(waited.is_err());
        });
    }
}
