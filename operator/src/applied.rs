//! What the operator last applied, so that a pass does not write objects it would write
//! unchanged. The pass right after the first one (woken by the objects the first one created)
//! used to apply all of them again; each server-side apply costs the API server a round trip
//! and an admission chain even when it changes nothing.
//!
//! An entry says: this object, with this content, was applied and the server answered with
//! this resourceVersion. A pass skips the write when the desired content is the same and the
//! entry is still trusted:
//! - for kinds the controller watches (LVMVolumeGroup, DaemonSet, Deployment), every watch event
//!   is [`Applied::observe`]d: a version other than ours (someone edited it, vg-manager added its
//!   finalizer) or a deletion drops the entry, and the pass that event triggers applies again;
//! - for the others nothing would tell us of an edit or a deletion, so entries expire after
//!   [`TTL`], shorter than the resync of a Ready cluster (300 s): that pass re-applies everything
//!   and repairs drift as before.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::Resource;
use kube::runtime::watcher;

pub const TTL: Duration = Duration::from_secs(240);

/// (kind, namespace, name).
pub type Key = (String, Option<String>, String);

struct Entry {
    digest: u64,
    resource_version: Option<String>,
    at: Instant,
}

pub struct Applied {
    ttl: Duration,
    entries: Mutex<HashMap<Key, Entry>>,
}

impl Default for Applied {
    fn default() -> Self {
        Self::with_ttl(TTL)
    }
}

/// A digest of what would be sent: the same content gives the same digest within the process.
pub fn digest(obj: &impl serde::Serialize) -> u64 {
    let bytes = serde_json::to_vec(obj).unwrap_or_default();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

impl Applied {
    pub fn with_ttl(ttl: Duration) -> Self {
        Applied {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `digest` was applied at `key` recently and nothing has changed it since.
    pub fn unchanged(&self, key: &Key, digest: u64) -> bool {
        self.entries()
            .get(key)
            .is_some_and(|e| e.digest == digest && e.at.elapsed() < self.ttl)
    }

    pub fn record(&self, key: Key, digest: u64, resource_version: Option<String>) {
        self.entries().insert(
            key,
            Entry {
                digest,
                resource_version,
                at: Instant::now(),
            },
        );
    }

    pub fn forget(&self, key: &Key) {
        self.entries().remove(key);
    }

    /// Forgets everything: a teardown deletes what was applied, and an LVMCluster created again
    /// must get all of it back.
    pub fn clear(&self) {
        self.entries().clear();
    }

    /// A watch event of a watched kind: keeps the entry only if the object is still the version
    /// we applied.
    pub fn observe<K: Resource<DynamicType = ()>>(&self, event: &watcher::Event<K>) {
        let (obj, deleted) = match event {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => (o, false),
            watcher::Event::Delete(o) => (o, true),
            watcher::Event::Init | watcher::Event::InitDone => return,
        };
        let key = key_of(obj);
        let mut entries = self.entries();
        let ours = entries.get(&key).is_some_and(|e| {
            e.resource_version.is_some() && e.resource_version == obj.meta().resource_version
        });
        if deleted || !ours {
            entries.remove(&key);
        }
    }
}

pub fn key_of<K: Resource<DynamicType = ()>>(obj: &K) -> Key {
    (
        K::kind(&()).into_owned(),
        obj.meta().namespace.clone(),
        obj.meta().name.clone().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DaemonSet;
    use kube::api::ObjectMeta;

    fn ds(rv: &str) -> DaemonSet {
        DaemonSet {
            metadata: ObjectMeta {
                name: Some("vg-manager".into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn skips_only_the_same_content_still_at_our_version() {
        let applied = Applied::default();
        let obj = ds("7");
        let key = key_of(&obj);
        let d = digest(&obj);
        assert!(!applied.unchanged(&key, d), "nothing applied yet");
        applied.record(key.clone(), d, Some("7".into()));
        assert!(applied.unchanged(&key, d));
        assert!(!applied.unchanged(&key, d + 1), "new content is written");
        // Our own write's event keeps the entry; someone else's version drops it.
        applied.observe(&watcher::Event::Apply(ds("7")));
        assert!(applied.unchanged(&key, d));
        applied.observe(&watcher::Event::Apply(ds("8")));
        assert!(!applied.unchanged(&key, d));
        applied.record(key.clone(), d, Some("9".into()));
        applied.observe(&watcher::Event::Delete(ds("9")));
        assert!(
            !applied.unchanged(&key, d),
            "a deleted object is applied again"
        );
    }

    #[test]
    fn entries_expire() {
        let applied = Applied::with_ttl(Duration::ZERO);
        let obj = ds("1");
        applied.record(key_of(&obj), digest(&obj), Some("1".into()));
        assert!(!applied.unchanged(&key_of(&obj), digest(&obj)));
    }
}
