//! [`Identity`]: who a cgroup is, as [`super::identify`] found it on the
//! path and [`super::Known`] completed it, and what each consumer reads of
//! it (names, the search text of `top`'s filter, metric labels).

use std::fmt;

use serde::Serialize;

use super::{Kind, QosClass, Runtime, bounded, clean, containers};

/// Which of the names belong to the cgroup itself (its last segment), not
/// to an ancestor.
pub(super) const OWN_UNIT: u8 = 1;

/// Who a cgroup belongs to, as far as its path tells. Build it with
/// [`identify`]; every accessor borrows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub(super) kind: Kind,
    /// Never empty, at most [`MAX_NAME_LEN`] bytes, no control characters.
    pub(super) name: String,
    /// The innermost systemd unit on the path, readable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) unit: Option<String>,
    /// The unit as systemd spells it (what `systemctl` takes), when that
    /// differs from `unit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) unit_escaped: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) instance: Option<String>,
    /// The slice the unit is in, readable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) slice: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) slice_escaped: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) session: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) container_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) runtime: Option<Runtime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) pod_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) qos: Option<QosClass>,
    /// The rest is filled by enrichment ([`Known`]), never from the path:
    /// the user name of `uid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) user: Option<String>,
    /// The container's name (`docker ps`, or the container's name in its
    /// pod's spec).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) container_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) pod_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) namespace: Option<String>,
    #[serde(skip)]
    pub(super) own: u8,
    /// The unit is a container's scope or a pod's slice: its name is the
    /// container's or pod's, not a service a person would label by.
    #[serde(skip)]
    pub(super) unit_is_workload: bool,
    /// What the display name is taken from, and the last segment when the
    /// cgroup is below it: enrichment renames from these.
    #[serde(skip)]
    pub(super) anchor: NameAnchor,
    #[serde(skip)]
    pub(super) below: Option<String>,
}

/// What a display name is made of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum NameAnchor {
    /// Nothing recognised: the last segment.
    #[default]
    None,
    Unit,
    Pod,
    Container,
    Monitor,
}

/// The Prometheus label values of a cgroup; empty means absent (as
/// Prometheus reads an empty label).
///
/// Bounded: each value is a function of the cgroup's path alone (one value
/// per cgroup, never per process or event, so they add no series to a
/// `cgroup` label), at most [`MAX_NAME_LEN`] bytes, without control
/// characters; containers appear by their 12-character short id, pods by
/// UID, and the unit label is left empty for a container's scope or a
/// pod's slice, which the `container` and `pod` labels already name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Labels<'a> {
    pub unit: &'a str,
    pub container: &'a str,
    pub pod: &'a str,
    /// Empty until enrichment fills it.
    pub namespace: &'a str,
}

impl<'a> Labels<'a> {
    pub const NAMES: [&'static str; 4] = ["unit", "container", "pod", "namespace"];

    /// `(label, value)` pairs, as [`crate::metrics::Exposition::sample`] takes them.
    pub fn pairs(&self) -> [(&'static str, &'a str); 4] {
        [
            ("unit", self.unit),
            ("container", self.container),
            ("pod", self.pod),
            ("namespace", self.namespace),
        ]
    }
}

impl Identity {
    pub(super) fn root() -> Self {
        Self {
            kind: Kind::Root,
            name: "/".to_string(),
            unit: None,
            unit_escaped: None,
            template: None,
            instance: None,
            slice: None,
            slice_escaped: None,
            uid: None,
            session: None,
            container_id: None,
            runtime: None,
            pod_uid: None,
            qos: None,
            user: None,
            container_name: None,
            pod_name: None,
            namespace: None,
            own: 0,
            unit_is_workload: false,
            anchor: NameAnchor::None,
            below: None,
        }
    }

    /// Makes the display name from the anchor, what enrichment knows and
    /// the segment below (see [`Self::name`]).
    pub(super) fn rename(&mut self) {
        let user = |s: String| match (&self.user, self.uid) {
            (Some(u), Some(_)) => format!("{s} ({u})"),
            _ => s,
        };
        let base = match self.anchor {
            NameAnchor::None => None,
            NameAnchor::Unit => self.unit.clone().map(user),
            NameAnchor::Pod => Some(match (&self.namespace, &self.pod_name) {
                (Some(ns), Some(p)) => format!("{ns}/{p}"),
                (None, Some(p)) => p.clone(),
                _ => self.pod_label(),
            }),
            NameAnchor::Container => Some(match (&self.container_name, &self.pod_name) {
                (Some(c), Some(p)) => match &self.namespace {
                    Some(ns) => format!("{ns}/{p}/{c}"),
                    None => format!("{p}/{c}"),
                },
                (Some(c), None) => c.clone(),
                _ => self.short_id().unwrap_or_default().to_string(),
            }),
            NameAnchor::Monitor => Some(format!(
                "conmon-{}",
                self.container_name
                    .as_deref()
                    .or(self.short_id())
                    .unwrap_or_default()
            )),
        };
        let name = match (base, &self.below) {
            (Some(b), Some(tail)) => format!("{b}/{tail}"),
            (Some(b), None) => b,
            (None, Some(tail)) => tail.clone(),
            (None, None) => String::new(),
        };
        self.name = bounded(name);
        if self.name.is_empty() {
            self.name = "/".to_string();
        }
    }

    /// `pod:<first 8 of the UID>`.
    fn pod_label(&self) -> String {
        let uid = self.pod_uid.as_deref().unwrap_or_default();
        format!("pod:{}", uid.get(..8).unwrap_or(uid))
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// A short name a person recognises: the unit (with its user's name
    /// when enrichment knows the uid the path names:
    /// `user-1000.slice (wizard)`), the container's name or short id
    /// (`conmon-<that>` for its monitor; `<namespace>/<pod>/<container>`
    /// when its pod is known), `<namespace>/<pod>` or `pod:<first 8 of the
    /// UID>`, else the last path segment; below any of those, `<that>/<last
    /// segment>`. `/` for the root. Never empty, at most [`MAX_NAME_LEN`]
    /// bytes, no control characters.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The innermost systemd unit on the path, readable
    /// (`t3-serve@wizard.service`, `system-t3-serve.slice`).
    pub fn unit(&self) -> Option<&str> {
        self.unit.as_deref()
    }

    /// The unit as systemd spells it, when that differs from [`Self::unit`].
    pub fn unit_escaped(&self) -> Option<&str> {
        self.unit_escaped.as_deref()
    }

    /// The unit name `systemctl` accepts.
    pub fn systemd_unit(&self) -> Option<&str> {
        self.unit_escaped().or(self.unit())
    }

    /// `t3-serve@.service` for `t3-serve@wizard.service`.
    pub fn template(&self) -> Option<&str> {
        self.template.as_deref()
    }

    /// `wizard` for `t3-serve@wizard.service`, readable.
    pub fn instance(&self) -> Option<&str> {
        self.instance.as_deref()
    }

    /// The slice holding the unit, readable (`system-t3-serve.slice`);
    /// `None` for units at the top, whose slice is `-.slice`.
    pub fn slice(&self) -> Option<&str> {
        self.slice.as_deref()
    }

    /// The slice as systemd spells it, when that differs from [`Self::slice`].
    pub fn slice_escaped(&self) -> Option<&str> {
        self.slice_escaped.as_deref()
    }

    /// The uid of a user's cgroups (`user-1000.slice`, `user@1000.service`);
    /// the user name is enrichment's business.
    pub fn uid(&self) -> Option<u32> {
        self.uid
    }

    /// The logind session id (`3` for `session-3.scope`).
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// The innermost container's full id.
    pub fn container_id(&self) -> Option<&str> {
        self.container_id.as_deref()
    }

    /// The innermost container's short id, 12 characters.
    pub fn short_id(&self) -> Option<&str> {
        self.container_id().map(containers::short_id)
    }

    /// The container's runtime, when the path says (under a pod with the
    /// cgroupfs driver it does not).
    pub fn runtime(&self) -> Option<Runtime> {
        self.runtime
    }

    /// The innermost pod's UID, with `-`s.
    pub fn pod_uid(&self) -> Option<&str> {
        self.pod_uid.as_deref()
    }

    /// The QoS class of the pod, or of the kubelet's QoS cgroup.
    pub fn qos(&self) -> Option<QosClass> {
        self.qos
    }

    /// The Kubernetes namespace, once enrichment has set it.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The user name of [`Self::uid`], once enrichment has set it.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The container's name, once enrichment has set it.
    pub fn container_name(&self) -> Option<&str> {
        self.container_name.as_deref()
    }

    /// The pod's name, once enrichment has set it.
    pub fn pod_name(&self) -> Option<&str> {
        self.pod_name.as_deref()
    }

    /// Enrichment's slot for the pod's namespace (made printable and
    /// bounded); renames.
    pub fn set_namespace(&mut self, namespace: Option<&str>) {
        self.namespace = clean(namespace);
        self.rename();
    }

    /// Whether any of the names only enrichment knows is set.
    pub fn is_enriched(&self) -> bool {
        self.user.is_some()
            || self.container_name.is_some()
            || self.pod_name.is_some()
            || self.namespace.is_some()
    }

    /// Every name of the cgroup a person might type to find it (the
    /// display name, unit as read and as spelled, user, container id and
    /// name, pod UID and name, namespace), lowercase, one per line: what
    /// `top`'s filter searches.
    pub fn search_text(&self) -> String {
        let uid = self.uid.map(|u| u.to_string());
        [
            Some(self.name.as_str()),
            self.unit(),
            self.unit_escaped(),
            self.user(),
            uid.as_deref(),
            self.container_id(),
            self.container_name(),
            self.pod_uid(),
            self.pod_name(),
            self.namespace(),
        ]
        .into_iter()
        .flatten()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join("\n")
    }

    /// `<name> (<path>)` for log lines and alert summaries, or the path
    /// alone when the name says nothing more than its last segment.
    pub fn describe(&self, path: &str) -> String {
        if matches!(self.kind, Kind::Root | Kind::Other) {
            path.to_string()
        } else {
            format!("{} ({path})", self.name)
        }
    }

    /// Whether the cgroup is the unit's own (not a subgroup below it).
    pub fn is_unit_cgroup(&self) -> bool {
        self.own & OWN_UNIT != 0
    }

    /// The Prometheus label values; see [`Labels`].
    pub fn labels(&self) -> Labels<'_> {
        let unit = if self.unit_is_workload {
            ""
        } else {
            self.unit().unwrap_or("")
        };
        Labels {
            unit,
            container: self.short_id().unwrap_or(""),
            pod: self.pod_uid().unwrap_or(""),
            namespace: self.namespace().unwrap_or(""),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}
