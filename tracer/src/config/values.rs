//! The value types of the configuration, each parsed with an error that
//! says what was expected: durations with units, percentages, cgroup
//! globs, regular expressions, signals, sizes.

use std::fmt;
use std::time::Duration;

use globset::GlobMatcher;
use regex::Regex;
use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::names::{NameField, NameGlob};

/// A duration written with a unit: `"10s"`, `"250ms"`, `"2m"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with a unit, like \"10s\" or \"250ms\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Dur, E> {
                // The one duration syntax of flags and files.
                crate::clock::parse_duration(s)
                    .map(Dur)
                    .map_err(|e| E::custom(format!("{e}; write e.g. \"10s\", \"250ms\", \"2m\"")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                Err(E::custom(format!("`{v}` has no unit; write e.g. \"{v}s\"")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Dur, E> {
                Err(E::custom(format!("`{v}` has no unit; write e.g. \"{v}s\"")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A percentage in (0, 100], written `"30%"` (or a bare number).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Percent(pub f64);

impl Percent {
    pub fn fraction(self) -> f64 {
        self.0 / 100.0
    }
}

fn percent<E: de::Error>(v: f64, shown: &str) -> Result<Percent, E> {
    if v.is_finite() && v > 0.0 && v <= 100.0 {
        Ok(Percent(v))
    } else {
        Err(E::custom(format!(
            "`{shown}` is not a percentage above 0 and at most 100"
        )))
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Percent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a percentage like \"30%\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Percent, E> {
                let t = s.trim();
                let n = t.strip_suffix('%').unwrap_or(t).trim();
                match n.parse::<f64>() {
                    Ok(v) => percent(v, s),
                    Err(_) => Err(E::custom(format!(
                        "`{s}` is not a percentage; write e.g. \"30%\""
                    ))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Percent, E> {
                percent(v as f64, &v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Percent, E> {
                percent(v, &v.to_string())
            }
        }
        d.deserialize_any(V)
    }
}

/// A cgroup glob (see [`crate::config::filter`]).
#[derive(Clone, Debug)]
pub struct CgroupGlob {
    pub pattern: String,
    pub matcher: GlobMatcher,
}

impl CgroupGlob {
    /// Whether the glob selects this cgroup path. The root cgroup is never
    /// selected: it has no memory.high of its own.
    pub fn matches(&self, path: &str) -> bool {
        path != "/" && self.matcher.is_match(path)
    }
}

impl<'de> Deserialize<'de> for CgroupGlob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pattern = String::deserialize(d)?;
        let matcher = crate::config::filter::cgroup_glob(&pattern).map_err(de::Error::custom)?;
        Ok(Self { pattern, matcher })
    }
}

/// A budget's name selectors (`unit`, `container`, `pod`, `pod_namespace`):
/// a glob over that name of a cgroup's identity, with an error that names
/// the key and the glob.
fn name_glob<'de, D: Deserializer<'de>>(
    d: D,
    field: NameField,
) -> Result<Option<NameGlob>, D::Error> {
    let pattern = String::deserialize(d)?;
    NameGlob::new(field, &pattern)
        .map(Some)
        .map_err(de::Error::custom)
}

pub fn unit_glob<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NameGlob>, D::Error> {
    name_glob(d, NameField::Unit)
}

pub fn container_glob<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NameGlob>, D::Error> {
    name_glob(d, NameField::Container)
}

pub fn pod_glob<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NameGlob>, D::Error> {
    name_glob(d, NameField::Pod)
}

pub fn namespace_glob<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NameGlob>, D::Error> {
    name_glob(d, NameField::Namespace)
}

/// A regular expression, matched against a process's comm or cmdline.
#[derive(Clone, Debug)]
pub struct Pattern(pub Regex);

impl Pattern {
    pub fn is_match(&self, s: &str) -> bool {
        self.0.is_match(s)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Regex::new(&s)
            .map(Pattern)
            .map_err(|e| de::Error::custom(format!("bad regular expression `{s}`: {e}")))
    }
}

/// A signal by name (`SIGKILL`, `TERM`) or number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signal(pub i32);

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let name = s.trim().trim_start_matches("SIG");
        let n = match name {
            "KILL" => libc::SIGKILL,
            "TERM" => libc::SIGTERM,
            "INT" => libc::SIGINT,
            "USR1" => libc::SIGUSR1,
            "USR2" => libc::SIGUSR2,
            "ABRT" => libc::SIGABRT,
            other => other
                .parse::<i32>()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| {
                    de::Error::custom(format!(
                        "`{s}` is not a signal; write SIGKILL, SIGTERM or a number"
                    ))
                })?,
        };
        Ok(Self(n))
    }
}

/// `256MiB`, `1GiB`, `500MB`, `4096` (bytes).
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" => 1_000,
        "KiB" => 1 << 10,
        "M" | "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "G" | "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        _ => return None,
    };
    (n.is_finite() && n >= 0.0).then_some((n * mult as f64) as u64)
}
