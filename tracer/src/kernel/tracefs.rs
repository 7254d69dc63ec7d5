//! tracefs: where it is mounted, and the field layout of classic
//! tracepoints (used only by the tracepoint fallback programs; raw
//! tracepoints take their argument layout from BTF).

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::path::{Path, PathBuf};

const DEFAULT_MOUNT: &str = "/sys/kernel/tracing";
const LEGACY_MOUNT: &str = "/sys/kernel/debug/tracing";

/// Where tracefs is mounted, if anywhere.
pub fn mount_point() -> Option<PathBuf> {
    [DEFAULT_MOUNT, LEGACY_MOUNT]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

/// Returns tracefs's mount point, mounting it at `/sys/kernel/tracing`
/// if it is not mounted yet (the classic tracepoint attach path reads
/// tracepoint ids from it).
pub fn ensure_mounted() -> std::io::Result<PathBuf> {
    if let Some(p) = mount_point() {
        return Ok(p);
    }
    let target = CString::new(DEFAULT_MOUNT).expect("no NUL in constant");
    let fstype = CString::new("tracefs").expect("no NUL in constant");
    let source = CString::new("nodev").expect("no NUL in constant");
    // SAFETY: all pointers are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(PathBuf::from(DEFAULT_MOUNT))
}

/// One field of a tracepoint record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub offset: u32,
    pub size: u32,
}

/// The fields of a tracepoint's record, from its `format` file.
#[derive(Clone, Debug, Default)]
pub struct Format {
    pub fields: HashMap<String, Field>,
}

impl Format {
    pub fn read(tracefs: &Path, category: &str, name: &str) -> std::io::Result<Self> {
        let text = fs::read_to_string(
            tracefs
                .join("events")
                .join(category)
                .join(name)
                .join("format"),
        )?;
        Ok(Self::parse(&text))
    }

    /// Parses lines like
    /// `field:unsigned long nr_reclaimed;\toffset:8;\tsize:8;\tsigned:0;`.
    pub fn parse(text: &str) -> Self {
        let mut fields = HashMap::new();
        for line in text.lines() {
            let mut decl = None;
            let mut offset = None;
            let mut size = None;
            for part in line.trim().split(';') {
                let part = part.trim();
                if let Some(d) = part.strip_prefix("field:") {
                    decl = Some(d);
                } else if let Some(o) = part.strip_prefix("offset:") {
                    offset = o.parse().ok();
                } else if let Some(s) = part.strip_prefix("size:") {
                    size = s.parse().ok();
                }
            }
            if let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) {
                // The name is the last identifier: `char comm[16]`, `int pid`.
                let name = decl
                    .split_whitespace()
                    .last()
                    .unwrap_or("")
                    .split('[')
                    .next()
                    .unwrap_or("");
                if !name.is_empty() {
                    fields.insert(name.to_string(), Field { offset, size });
                }
            }
        }
        Self { fields }
    }

    pub fn offset(&self, name: &str) -> Option<u32> {
        self.fields.get(name).map(|f| f.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mark_victim_format() {
        let text = "name: mark_victim\nID: 415\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;\n\
\tfield:__data_loc char[] comm;\toffset:12;\tsize:4;\tsigned:0;\n\
\tfield:unsigned long anon_rss;\toffset:24;\tsize:8;\tsigned:0;\n\
\nprint fmt: \"pid=%d\", REC->pid\n";
        let f = Format::parse(text);
        assert_eq!(f.offset("pid"), Some(8));
        assert_eq!(f.offset("comm"), Some(12));
        assert_eq!(
            f.fields["anon_rss"],
            Field {
                offset: 24,
                size: 8
            }
        );
        assert_eq!(f.offset("common_type"), Some(0));
        assert_eq!(f.offset("nope"), None);
    }

    #[test]
    fn garbage_gives_no_fields() {
        assert!(
            Format::parse("field:;offset:x;size:;\n\u{0}\u{ff}")
                .fields
                .is_empty()
        );
    }
}
