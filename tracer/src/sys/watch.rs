//! New cgroups the moment they are made: inotify on every directory of the
//! memory hierarchy, so a cgroup that fills and dies within a second is
//! still sampled and named. The registry ([`super::registry`]) owns one and
//! turns what it reports into entries; without inotify (no watches left,
//! a kernel without it) the registry falls back to its rescans.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A directory made (or moved in) under a watched one.
#[derive(Debug, PartialEq, Eq)]
pub struct Created {
    pub dir: PathBuf,
}

#[derive(Debug)]
pub struct DirWatch {
    fd: OwnedFd,
    /// Watch descriptor → the directory it watches.
    dirs: HashMap<i32, PathBuf>,
    /// Events that are not whole yet, between reads.
    buf: Vec<u8>,
    /// A directory could not be watched (the watch limit): what is made
    /// in it is seen only by a walk.
    partial: bool,
    /// The kernel's queue overflowed: events were dropped since the last
    /// [`DirWatch::walked`].
    overflowed: bool,
}

const MASK: u32 = libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_ONLYDIR | libc::IN_DELETE_SELF;

impl DirWatch {
    /// A watcher with no directories yet; None when inotify is unavailable.
    pub fn new() -> Option<Self> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        Some(Self {
            // SAFETY: fd is a fresh descriptor this struct now owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            dirs: HashMap::new(),
            buf: Vec::with_capacity(4096),
            partial: false,
            overflowed: false,
        })
    }

    /// Watches `dir` (not its subdirectories). False when the kernel
    /// refused (the watch limit reached, the directory gone).
    pub fn add(&mut self, dir: &Path) -> bool {
        let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: c is a valid NUL-terminated path; the fd is ours.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), MASK) };
        if wd < 0 {
            // A directory gone before its watch is no loss; anything else
            // (no watches left, no memory) leaves part of the tree unseen.
            let gone = matches!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::ENOENT | libc::ENOTDIR)
            );
            self.partial |= !gone;
            return false;
        }
        self.dirs.insert(wd, dir.to_path_buf());
        true
    }

    /// Whether every directory added is watched and no event was dropped
    /// since the last walk: then inotify alone keeps a registry current.
    pub fn complete(&self) -> bool {
        !self.partial && !self.overflowed
    }

    /// A walk of the whole tree has just found what dropped events missed.
    pub fn walked(&mut self) {
        self.overflowed = false;
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.dirs.len()
    }

    /// The directories made since the last call, without blocking.
    pub fn poll(&mut self) -> Vec<Created> {
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            // SAFETY: chunk is a writable buffer of the length given.
            let n =
                unsafe { libc::read(self.fd.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len()) };
            let Ok(n) = usize::try_from(n) else { break };
            if n == 0 {
                break;
            }
            self.buf.extend_from_slice(&chunk[..n]);
            self.parse(&mut out);
        }
        out
    }

    /// Takes whole `struct inotify_event`s off the buffer.
    fn parse(&mut self, out: &mut Vec<Created>) {
        const HEAD: usize = 16;
        let mut pos = 0;
        while let Some(head) = self.buf.get(pos..pos + HEAD) {
            let int =
                |i: usize| u32::from_ne_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
            let (wd, mask, len) = (int(0) as i32, int(4), int(12) as usize);
            let Some(name) = self.buf.get(pos + HEAD..pos + HEAD + len) else {
                break;
            };
            let name = name.split(|&b| b == 0).next().unwrap_or_default();
            if mask & libc::IN_Q_OVERFLOW != 0 {
                self.overflowed = true;
            } else if mask & libc::IN_IGNORED != 0 || mask & libc::IN_DELETE_SELF != 0 {
                self.dirs.remove(&wd);
            } else if mask & libc::IN_ISDIR != 0
                && mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0
                && let Some(parent) = self.dirs.get(&wd)
            {
                out.push(Created {
                    dir: parent.join(std::ffi::OsStr::from_bytes(name)),
                });
            }
            pos += HEAD + len;
        }
        self.buf.drain(..pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_new_directories_at_once() {
        let root = std::env::temp_dir().join(format!("memtrace-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let mut w = DirWatch::new().expect("inotify");
        assert!(w.add(&root));
        assert!(w.poll().is_empty());
        std::fs::create_dir(root.join("a")).unwrap();
        std::fs::write(root.join("file"), b"x").unwrap();
        let got = w.poll();
        assert_eq!(
            got,
            vec![Created {
                dir: root.join("a")
            }],
            "files are not cgroups"
        );
        assert!(w.add(&root.join("a")));
        std::fs::create_dir(root.join("a/b")).unwrap();
        assert_eq!(
            w.poll(),
            vec![Created {
                dir: root.join("a/b")
            }]
        );
        std::fs::remove_dir(root.join("a/b")).unwrap();
        std::fs::remove_dir(root.join("a")).unwrap();
        assert!(w.poll().is_empty());
        assert_eq!(w.len(), 1, "the removed directory's watch is dropped");
        assert!(!w.add(&root.join("missing")));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
