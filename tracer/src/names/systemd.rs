//! systemd's names in cgroup paths: units, slices, sessions, user managers.
//!
//! A cgroup that systemd made is named after its unit, with one twist:
//! `cg_escape()` prefixes a `_` to names that could clash with the kernel's
//! own files (`cpu.service` becomes `_cpu.service`), so one leading `_` is
//! dropped before the name is read (systemd's `cg_unescape()`).
//!
//! Unit names are themselves escaped (systemd.unit(5), "String Escaping for
//! Inclusion in Unit Names"): `/` becomes `-`, and every byte that is not an
//! ASCII alphanumeric, `:`, `_` or `.` (a leading `.` too) becomes `\xNN`.
//! So `-` is `\x2d`, `@` is `\x40`, a space is `\x20`, `ö` is `\xc3\xb6`.
//! systemd's own unescape (`systemd-escape -u`) also turns every `-` back
//! into `/`, which is right for path units but reads badly for slices
//! (`system-t3\x2dserve.slice` would become `system/t3-serve.slice`), so the
//! readable form here decodes `\xNN` only and keeps `-` as it is.

use std::borrow::Cow;

/// systemd's limit: a unit name is shorter than `UNIT_NAME_MAX` (256).
pub(super) const UNIT_NAME_MAX: usize = 255;

/// The unit types that own cgroups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum UnitType {
    Service,
    Scope,
    Slice,
    Socket,
    Mount,
    Swap,
}

/// A unit name as systemd spells it, split into its parts.
#[derive(Clone, Copy, Debug)]
pub(super) struct Unit<'a> {
    /// The whole name, escaped as systemd spells it (`cg_escape` undone).
    pub name: &'a str,
    pub ty: UnitType,
    /// Before the `@` (or the type suffix).
    pub prefix: &'a str,
    /// Between the first `@` and the type suffix, escaped.
    pub instance: Option<&'a str>,
}

fn valid_char(b: u8) -> bool {
    // systemd's VALID_CHARS, plus `@` (the template separator; further `@`s
    // may appear in an instance).
    b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_' | b'.' | b'\\' | b'@')
}

/// The unit a cgroup directory is named after, if it is a valid unit name
/// of a type that owns cgroups (`unit_name_is_valid()`'s rules; templates
/// such as `getty@.service` never run, so they are not units here).
pub(super) fn parse_unit(segment: &str) -> Option<Unit<'_>> {
    let name = segment.strip_prefix('_').unwrap_or(segment);
    if name.is_empty() || name.len() > UNIT_NAME_MAX {
        return None;
    }
    let dot = name.rfind('.')?;
    let ty = match &name[dot + 1..] {
        "service" => UnitType::Service,
        "scope" => UnitType::Scope,
        "slice" => UnitType::Slice,
        "socket" => UnitType::Socket,
        "mount" => UnitType::Mount,
        "swap" => UnitType::Swap,
        _ => return None,
    };
    let stem = &name[..dot];
    if stem.is_empty() || !stem.bytes().all(valid_char) {
        return None;
    }
    let (prefix, instance) = match stem.split_once('@') {
        None => (stem, None),
        Some((p, i)) => {
            // Slices cannot be instantiated (cg_slice_to_path rejects them).
            if p.is_empty() || i.is_empty() || ty == UnitType::Slice {
                return None;
            }
            (p, Some(i))
        }
    };
    Some(Unit {
        name,
        ty,
        prefix,
        instance,
    })
}

/// The template of an instance: `t3-serve@wizard.service` → `t3-serve@.service`.
pub(super) fn template(unit: &Unit<'_>) -> Option<String> {
    unit.instance?;
    let suffix = &unit.name[unit.name.rfind('.')?..];
    Some(format!("{}@{suffix}", unit.prefix))
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit())
}

fn parse_uid(s: &str) -> Option<u32> {
    if all_digits(s) { s.parse().ok() } else { None }
}

/// `user-1000.slice` → 1000 (logind's per-user slice).
pub(super) fn user_slice_uid(unit: &Unit<'_>) -> Option<u32> {
    if unit.ty != UnitType::Slice {
        return None;
    }
    parse_uid(unit.prefix.strip_prefix("user-")?)
}

/// `user@1000.service` → 1000 (the user's service manager).
pub(super) fn user_manager_uid(unit: &Unit<'_>) -> Option<u32> {
    if unit.ty != UnitType::Service || unit.prefix != "user" {
        return None;
    }
    parse_uid(unit.instance?)
}

/// `session-3.scope` → `3` (logind's session scope; ids are alphanumeric,
/// e.g. `c1` for sessions of some display managers).
pub(super) fn session_id<'a>(unit: &Unit<'a>) -> Option<&'a str> {
    if unit.ty != UnitType::Scope || unit.instance.is_some() {
        return None;
    }
    let id = unit.prefix.strip_prefix("session-")?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(id)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The readable form of a systemd-escaped name: each `\xNN` becomes its
/// byte, and `-` stays `-` (see the module doc for why this is not
/// `systemd-escape -u`).
///
/// Never fails: an escape that is not `\x` and two hex digits stays as
/// written; so do escapes of control characters (`\x0a`, `\x1b`) and of
/// `/`, which must not reach a terminal, a log line or a path-like display
/// as themselves. If the decoded bytes are not UTF-8 the name is returned
/// as written.
pub fn unescape(s: &str) -> Cow<'_, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1] == b'x'
            && let (Some(h), Some(l)) = (hex(b[i + 2]), hex(b[i + 3]))
        {
            let v = (h << 4) | l;
            if v >= 0x20 && v != 0x7f && v != b'/' {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(decoded) => Cow::Owned(decoded),
        Err(_) => Cow::Borrowed(s),
    }
}
