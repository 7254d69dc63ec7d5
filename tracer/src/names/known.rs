//! What enrichment learned, keyed by what a path names.
//!
//! A path names a uid (`user-1000.slice`), a container id
//! (`docker-<id>.scope`) or a pod UID (`kubepods-…-pod<uid>.slice`), never
//! the names people give them. The enrichment thread (`crate::sys::enrich`)
//! looks those up (the user database, the runtime's socket or state files)
//! and answers with [`Learned`] facts; [`Known`] keeps them and lays them
//! over an [`Identity`] with [`Known::apply`]. So a cgroup's full identity
//! is a pure function of its path and what is known: the same for the
//! registry, the policy and every view.
//!
//! Bounded: values are made printable and cut to [`MAX_NAME_LEN`]; each
//! table holds at most [`MAX_ENTRIES`]. Facts live as long as a cgroup
//! names them: the registry forgets the others ([`Known::retain`] with the
//! [`Named`] of its cgroups) when its cgroups go, so on a node with
//! container churn the new containers are named and the tables stay
//! bounded. Only more than [`MAX_ENTRIES`] of them at once are named by id.

use std::collections::{HashMap, HashSet};

use super::{Identity, MAX_NAME_LEN, clean};

/// The most facts each table of [`Known`] keeps.
pub const MAX_ENTRIES: usize = 16_384;

/// A question for the enrichment thread: what is the name of what a path
/// names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Ask {
    /// The user name of a uid.
    User(u32),
    /// The names of a container: its own, and its pod's when it is in one.
    Container {
        id: String,
        /// The runtime the path names (`None`: a bare id under a pod).
        runtime: Option<super::Runtime>,
        /// The uid of the user manager the container runs under (rootless
        /// Podman's socket is the user's).
        owner: Option<u32>,
    },
    /// A pod's namespace, when no container of it answered.
    Pod(String),
}

/// A container's names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerNames {
    /// Its name: `docker ps`'s NAMES, or its name in the pod's spec.
    pub name: Option<String>,
    /// The pod it belongs to, when the runtime says.
    pub pod_uid: Option<String>,
    pub pod: PodNames,
}

/// A pod's names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodNames {
    pub name: Option<String>,
    pub namespace: Option<String>,
}

impl PodNames {
    fn is_empty(&self) -> bool {
        self.name.is_none() && self.namespace.is_none()
    }

    /// What `other` adds, without erasing what is known.
    fn merge(&mut self, other: &PodNames) -> bool {
        let mut changed = false;
        for (mine, theirs) in [
            (&mut self.name, &other.name),
            (&mut self.namespace, &other.namespace),
        ] {
            if theirs.is_some() && mine != theirs {
                mine.clone_from(theirs);
                changed = true;
            }
        }
        changed
    }
}

/// One answer of the enrichment thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Learned {
    User { uid: u32, name: String },
    Container { id: String, names: ContainerNames },
    Pod { uid: String, names: PodNames },
}

/// What a set of cgroups names: the facts and questions worth keeping.
#[derive(Debug, Default)]
pub struct Named<'a> {
    uids: HashSet<u32>,
    containers: HashSet<&'a str>,
    pods: HashSet<&'a str>,
}

impl<'a> Named<'a> {
    /// What the identities name.
    pub fn of(ids: impl IntoIterator<Item = &'a Identity>) -> Self {
        let mut n = Self::default();
        for id in ids {
            n.uids.extend(id.uid());
            n.containers.extend(id.container_id());
            n.pods.extend(id.pod_uid());
        }
        n
    }

    /// Whether a question is about something named.
    pub fn names(&self, ask: &Ask) -> bool {
        match ask {
            Ask::User(uid) => self.uids.contains(uid),
            Ask::Container { id, .. } => self.containers.contains(id.as_str()),
            Ask::Pod(uid) => self.pods.contains(uid.as_str()),
        }
    }
}

/// Everything enrichment learned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Known {
    users: HashMap<u32, String>,
    containers: HashMap<String, ContainerNames>,
    pods: HashMap<String, PodNames>,
}

fn cleaned(v: &Option<String>) -> Option<String> {
    clean(v.as_deref())
}

impl Known {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.containers.is_empty() && self.pods.is_empty()
    }

    /// How many facts are kept, all tables together.
    pub fn len(&self) -> usize {
        self.users.len() + self.containers.len() + self.pods.len()
    }

    /// Whether a table is full, so that a new fact would be dropped.
    pub fn is_full(&self) -> bool {
        [self.users.len(), self.containers.len(), self.pods.len()]
            .into_iter()
            .any(|n| n >= MAX_ENTRIES)
    }

    /// Forgets the facts about what no cgroup of `named` names (a pod is
    /// also kept for a kept container of it); whether any was forgotten.
    pub fn retain(&mut self, named: &Named) -> bool {
        let before = self.len();
        self.users.retain(|uid, _| named.uids.contains(uid));
        self.containers
            .retain(|id, _| named.containers.contains(id.as_str()));
        let pods_of_containers: HashSet<&str> = self
            .containers
            .values()
            .filter_map(|c| c.pod_uid.as_deref())
            .collect();
        self.pods.retain(|uid, _| {
            named.pods.contains(uid.as_str()) || pods_of_containers.contains(uid.as_str())
        });
        self.len() != before
    }

    /// Keeps a fact; whether anything changed. Values are made printable
    /// and bounded here, whatever a runtime answered.
    pub fn learn(&mut self, fact: Learned) -> bool {
        match fact {
            Learned::User { uid, name } => {
                let Some(name) = clean(Some(&name)) else {
                    return false;
                };
                if self.users.get(&uid) == Some(&name)
                    || (self.users.len() >= MAX_ENTRIES && !self.users.contains_key(&uid))
                {
                    return false;
                }
                self.users.insert(uid, name);
                true
            }
            Learned::Container { id, names } => {
                let names = ContainerNames {
                    name: cleaned(&names.name),
                    pod_uid: cleaned(&names.pod_uid),
                    pod: PodNames {
                        name: cleaned(&names.pod.name),
                        namespace: cleaned(&names.pod.namespace),
                    },
                };
                let mut changed = false;
                if let Some(uid) = &names.pod_uid
                    && !names.pod.is_empty()
                {
                    changed |= self.learn_pod(uid.clone(), &names.pod);
                }
                if self.containers.get(&id) != Some(&names)
                    && (self.containers.len() < MAX_ENTRIES || self.containers.contains_key(&id))
                    && id.len() <= MAX_NAME_LEN
                {
                    self.containers.insert(id, names);
                    changed = true;
                }
                changed
            }
            Learned::Pod { uid, names } => {
                let names = PodNames {
                    name: cleaned(&names.name),
                    namespace: cleaned(&names.namespace),
                };
                self.learn_pod(uid, &names)
            }
        }
    }

    fn learn_pod(&mut self, uid: String, names: &PodNames) -> bool {
        if uid.len() > MAX_NAME_LEN || names.is_empty() {
            return false;
        }
        if let Some(p) = self.pods.get_mut(&uid) {
            return p.merge(names);
        }
        if self.pods.len() >= MAX_ENTRIES {
            return false;
        }
        self.pods.insert(uid, names.clone());
        true
    }

    /// Whether a question was answered already (a pod is answered by any
    /// of its containers).
    pub fn answers(&self, ask: &Ask) -> bool {
        match ask {
            Ask::User(uid) => self.users.contains_key(uid),
            Ask::Container { id, .. } => self.containers.contains_key(id),
            Ask::Pod(uid) => self.pods.get(uid).is_some_and(|p| p.namespace.is_some()),
        }
    }

    /// Lays what is known over an identity made from its path, and renames
    /// it; an identity with nothing known stays as it was.
    pub fn apply(&self, id: &mut Identity) {
        let user = id.uid.and_then(|u| self.users.get(&u)).cloned();
        let container = id
            .container_id
            .as_ref()
            .and_then(|c| self.containers.get(c));
        let pod_uid = id
            .pod_uid
            .clone()
            .or_else(|| container.and_then(|c| c.pod_uid.clone()));
        let mut pod = pod_uid
            .as_ref()
            .and_then(|u| self.pods.get(u))
            .cloned()
            .unwrap_or_default();
        if let Some(c) = container {
            pod.merge(&c.pod);
        }
        let container_name = container.and_then(|c| c.name.clone());
        if user == id.user
            && container_name == id.container_name
            && pod.name == id.pod_name
            && pod.namespace == id.namespace
        {
            return;
        }
        id.user = user;
        id.container_name = container_name;
        id.pod_name = pod.name;
        id.namespace = pod.namespace;
        id.rename();
    }

    /// What to ask about an identity that is not answered yet.
    pub fn asks(&self, id: &Identity) -> Vec<Ask> {
        let mut out = Vec::new();
        if let Some(uid) = id.uid() {
            out.push(Ask::User(uid));
        }
        if let Some(c) = id.container_id() {
            out.push(Ask::Container {
                id: c.to_string(),
                runtime: id.runtime(),
                owner: id.uid(),
            });
        }
        if let Some(p) = id.pod_uid() {
            out.push(Ask::Pod(p.to_string()));
        }
        out.retain(|a| !self.answers(a));
        out
    }
}
