//! Selecting cgroups by name: `unit = "t3-serve@*.service"`.
//!
//! A [`NameGlob`] is the name-side twin of a cgroup path glob
//! ([`crate::filter::cgroup_glob`]): same syntax (globset, `*` stays inside
//! one `/`-separated part), and like a budget's path glob it selects the
//! cgroup that *is* the named thing, not the cgroups below it: `unit =
//! "t3-serve@*.service"` selects `/system.slice/system-t3\x2dserve.slice/t3-serve@wizard.service`
//! but not a subgroup its service made inside it. Callers that want a
//! subtree test the ancestors (`registry::ancestors`) as the path filter
//! does. Unlike a path glob, `\` is an ordinary character, so
//! `unit = 'system-t3\x2dserve.slice'` is systemd's spelling of the slice.

use std::fmt;
use std::str::FromStr;

use globset::{GlobBuilder, GlobMatcher};

use super::{Identity, Kind};

/// What a [`NameGlob`] matches against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NameField {
    /// The systemd unit, readable (`t3-serve@wizard.service`) or as systemd
    /// spells it (`system-t3\x2dserve.slice`); either matching selects.
    Unit,
    /// The container id, full or short, or its name (enrichment).
    Container,
    /// The pod UID, with `-`s, or its name (enrichment).
    Pod,
    /// The pod's namespace (enrichment): selects the pods in it.
    Namespace,
    /// The display name ([`Identity::name`]).
    Name,
}

impl NameField {
    /// The config key: `unit`, `container`, `pod`, `pod_namespace`, `name`.
    pub fn key(self) -> &'static str {
        match self {
            NameField::Unit => "unit",
            NameField::Container => "container",
            NameField::Pod => "pod",
            NameField::Namespace => "pod_namespace",
            NameField::Name => "name",
        }
    }

    /// Whether what it matches can depend on enrichment: a selection by it
    /// must be made again when enrichment learns something.
    pub fn enriched(self) -> bool {
        !matches!(self, NameField::Unit)
    }
}

impl fmt::Display for NameField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

impl FromStr for NameField {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "unit" => Ok(NameField::Unit),
            "container" => Ok(NameField::Container),
            "pod" => Ok(NameField::Pod),
            "pod_namespace" => Ok(NameField::Namespace),
            "name" => Ok(NameField::Name),
            _ => Err(format!(
                "unknown name field `{s}` (expected unit, container, pod, pod_namespace or name)"
            )),
        }
    }
}

/// A glob over one name of a cgroup's [`Identity`].
#[derive(Clone, Debug)]
pub struct NameGlob {
    field: NameField,
    pattern: String,
    matcher: GlobMatcher,
}

impl NameGlob {
    /// Compiles `pattern` for `field`; the error names both.
    pub fn new(field: NameField, pattern: &str) -> Result<Self, String> {
        if pattern.is_empty() {
            return Err(format!("empty {field} glob"));
        }
        // `\` is literal: systemd spells names with `\xNN` escapes, and no
        // such spelling, container id or pod UID holds a glob metacharacter.
        let glob = GlobBuilder::new(pattern)
            .literal_separator(true)
            .backslash_escape(false)
            .build()
            .map_err(|e| format!("bad {field} glob `{pattern}`: {}", e.kind()))?;
        Ok(Self {
            field,
            pattern: pattern.to_string(),
            matcher: glob.compile_matcher(),
        })
    }

    pub fn field(&self) -> NameField {
        self.field
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Whether the cgroup is itself the unit, container or pod the glob
    /// names (for [`NameField::Name`]: whether its display name matches).
    pub fn matches(&self, id: &Identity) -> bool {
        let m = |s: Option<&str>| s.is_some_and(|s| self.matcher.is_match(s));
        match self.field {
            NameField::Unit => id.is_unit_cgroup() && (m(id.unit()) || m(id.unit_escaped())),
            NameField::Container => {
                id.kind() == Kind::Container
                    && (m(id.container_id()) || m(id.short_id()) || m(id.container_name()))
            }
            NameField::Pod => id.kind() == Kind::Pod && (m(id.pod_uid()) || m(id.pod_name())),
            NameField::Namespace => id.kind() == Kind::Pod && m(id.namespace()),
            NameField::Name => m(Some(id.name())),
        }
    }
}

impl fmt::Display for NameGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = \"{}\"", self.field, self.pattern)
    }
}
