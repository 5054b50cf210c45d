//! The agent's side of thin pool auto-extension: the pass says which pools to watch (those of
//! classes with `thinPoolConfig.autoExtend`, as LVM has them), and [`Agent::poll_pools`], run
//! every [`crate::autoextend::POLL`] by `vg-manager run`, reads those pools alone, carries out
//! [`crate::autoextend::decide`] and says so: an Event on the class's LVMVolumeGroup for each
//! extension, and for a pool that cannot grow one warning (Event, log, the class's status
//! reason) per condition until it clears, not one per poll.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::{info, warn};

use super::{Agent, Error};
use crate::autoextend::{self, Blocked, Expected, Part, Policy, Pool, Verdict};

/// A pool the poller watches.
#[derive(Clone, Debug, PartialEq)]
pub struct Watched {
    pub vg: String,
    pub pool: String,
    pub policy: Policy,
    /// The class's LVMVolumeGroup: where the Events go (`kubectl describe lvmvolumegroup`).
    pub regarding: ObjectReference,
}

/// A standing warning of one pool part.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Condition {
    Blocked(Blocked),
    /// lvextend failed (the words stay in the message).
    Failed,
}

#[derive(Default)]
pub(super) struct PoolState {
    watched: Vec<Watched>,
    /// Keyed by volume group and part; the message is what the status reason shows.
    warnings: BTreeMap<(String, Part), (Condition, String)>,
    /// Each pool's recent looks (its fill rate).
    looks: BTreeMap<String, VecDeque<Look>>,
}

/// One look at a pool: when, and the bytes its data and metadata used.
type Look = (Instant, (u64, u64));

/// The span a fill rate is measured over. A writer that syncs now and then (dd with fsync, a
/// database's checkpoints) moves in bursts: one 0.5 s look apart from the next may see twice
/// its mean rate, and size an extension for it; a few seconds see the mean.
const RATE_WINDOW: Duration = Duration::from_secs(3);

/// What one poll did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolPoll {
    /// Pool parts extended: capacity must be published again.
    pub extended: usize,
    /// A warning appeared or cleared: the class's status must be published again.
    pub warnings_changed: bool,
    /// A pool's use moved since the last look: look again soon ([`autoextend::next_poll`]).
    pub busy: bool,
}

impl Agent {
    /// Sets the pools to watch (from a pass). Wakes the poller when there were none; forgets
    /// the warnings of pools no longer watched.
    pub(super) fn watch_pools(&self, watched: Vec<Watched>) {
        let mut s = self.pools.lock().unwrap();
        let woke = s.watched.is_empty() && !watched.is_empty();
        s.warnings
            .retain(|(vg, _), _| watched.iter().any(|w| &w.vg == vg));
        s.looks.retain(|vg, _| watched.iter().any(|w| &w.vg == vg));
        s.watched = watched;
        drop(s);
        if woke {
            self.pools_watched.notify_one();
        }
    }

    /// Whether any class of this node has autoExtend (and its pool exists).
    pub fn watches_pools(&self) -> bool {
        !self.pools.lock().unwrap().watched.is_empty()
    }

    /// Resolves when the first pool is to be watched.
    pub async fn pools_to_watch(&self) {
        while !self.watches_pools() {
            self.pools_watched.notified().await;
        }
    }

    /// The standing warnings of class `vg`, for its status reason.
    pub(super) fn pool_warnings(&self, vg: &str) -> Vec<String> {
        self.pools
            .lock()
            .unwrap()
            .warnings
            .iter()
            .filter(|((v, _), _)| v == vg)
            .map(|(_, (_, m))| m.clone())
            .collect()
    }

    /// Records a warning; true when it is new (not already standing as this condition).
    fn raise(&self, vg: &str, part: Part, condition: Condition, message: &str) -> bool {
        let mut s = self.pools.lock().unwrap();
        let key = (vg.to_string(), part);
        if s.warnings.get(&key).is_some_and(|(c, _)| *c == condition) {
            return false;
        }
        s.warnings.insert(key, (condition, message.to_string()));
        true
    }

    /// Clears a part's warning; true when there was one.
    fn clear(&self, vg: &str, part: Part) -> bool {
        self.pools
            .lock()
            .unwrap()
            .warnings
            .remove(&(vg.to_string(), part))
            .is_some()
    }

    async fn pool_event(&self, w: &Watched, type_: EventType, reason: &str, note: &str) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1024).collect()),
            action: "AutoExtend".into(),
            secondary: None,
        };
        // A recorder of its own per Event: kube's Recorder folds every repeat of a reason on
        // one object into the first Event's series, keeping its note, and each extension's
        // sizes must be readable. Extensions are few (at most one per step up to the ceiling)
        // and warnings once per condition, so this makes no flood.
        let reporter = Reporter {
            controller: "vg-manager".into(),
            instance: Some(self.node.clone()),
        };
        let recorder = Recorder::new(self.client.clone(), reporter);
        if let Err(e) = recorder.publish(&ev, &w.regarding).await {
            warn!(%e, reason, "could not publish an event");
        }
    }

    /// One look at the watched pools (one `lvs` of them), and the extensions it calls for. With
    /// no pool watched, no command.
    pub async fn poll_pools(&self) -> Result<PoolPoll, Error> {
        let watched = self.pools.lock().unwrap().watched.clone();
        let mut out = PoolPoll::default();
        if watched.is_empty() {
            return Ok(out);
        }
        let names: Vec<(String, String)> = watched
            .iter()
            .map(|w| (w.vg.clone(), w.pool.clone()))
            .collect();
        let usage = self
            .blocking(move |lvm, _| lvm.pool_usage(&names))
            .await
            .map_err(|e| Error::Lvm(format!("reading the thin pools: {e}")))?;
        for w in &watched {
            let Some(u) = usage
                .iter()
                .find(|u| u.vg_name == w.vg && u.name == w.pool && u.is_thin_pool())
            else {
                continue;
            };
            let pool = Pool::from(u);
            let now = (Instant::now(), autoextend::used(&pool));
            let expected = {
                let mut s = self.pools.lock().unwrap();
                let looks = s.looks.entry(w.vg.clone()).or_default();
                // Moved since the last look: look again soon.
                out.busy |= looks.back().is_some_and(|(_, used)| *used != now.1);
                // The rate over the window: from its oldest look (at least one kept).
                while looks.len() > 1 && looks[1].0 + RATE_WINDOW <= now.0 {
                    looks.pop_front();
                }
                let e = match looks.front() {
                    Some((t, used)) => {
                        autoextend::expected(*used, now.1, (now.0 - *t).as_secs_f64())
                    }
                    None => Expected::default(),
                };
                looks.push_back(now);
                e
            };
            let d = autoextend::decide(&pool, &w.policy, expected);
            // Metadata first, as decide() gave it the free extents first.
            for (part, verdict) in [(Part::Metadata, d.metadata), (Part::Data, d.data)] {
                match verdict {
                    Verdict::Below => out.warnings_changed |= self.clear(&w.vg, part),
                    Verdict::Grow(add) => {
                        // The inputs of the decision, for whoever wonders why it grew so much.
                        info!(
                            vg = %w.vg,
                            pool = %w.pool,
                            part = part.as_str(),
                            ?pool,
                            expected_gain = match part {
                                Part::Data => expected.data,
                                Part::Metadata => expected.metadata,
                            },
                            add,
                            "extending the thin pool"
                        );
                        self.grow(w, part, add, &pool, &mut out).await;
                    }
                    Verdict::Blocked(why) => {
                        let m = autoextend::blocked_message(
                            &w.vg, &w.pool, part, why, &pool, &w.policy,
                        );
                        if self.raise(&w.vg, part, Condition::Blocked(why), &m) {
                            out.warnings_changed = true;
                            warn!(vg = %w.vg, pool = %w.pool, part = part.as_str(), "{m}");
                            let reason = match why {
                                Blocked::AtCeiling => "ThinPoolAtMaxSize",
                                Blocked::VgFull => "ThinPoolVolumeGroupFull",
                                Blocked::MetadataAtMaximum => "ThinPoolMetadataAtMaxSize",
                            };
                            let note = format!("on node {}: {m}", self.node);
                            self.pool_event(w, EventType::Warning, reason, &note).await;
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    async fn grow(&self, w: &Watched, part: Part, add: u64, pool: &Pool, out: &mut PoolPoll) {
        let (vg, name) = (w.vg.clone(), w.pool.clone());
        let started = Instant::now();
        let result = {
            // One LV change at a time on the node: a CreateVolume deciding now waits for the
            // new size rather than deciding on the old one.
            let _changes = self.reports.changes().await;
            let r = self
                .blocking(move |lvm, _| match part {
                    Part::Data => lvm.extend_pool_data_by(&vg, &name, add),
                    Part::Metadata => lvm.extend_pool_metadata_by(&vg, &name, add),
                })
                .await;
            // The cached report has the old size either way (a failure may have done part).
            self.reports.invalidate().await;
            r
        };
        let (size, percent) = match part {
            Part::Data => (pool.data_size, pool.data_percent),
            Part::Metadata => (pool.metadata_size, pool.metadata_percent),
        };
        let what = format!(
            "thin pool {}/{} {} was {percent:.1}% full, over the autoExtend threshold of {}%",
            w.vg,
            w.pool,
            part.as_str(),
            w.policy.threshold_percent
        );
        match result {
            Ok(()) => {
                out.extended += 1;
                out.warnings_changed |= self.clear(&w.vg, part);
                let grown = size + add;
                let share = match part {
                    Part::Data => format!(
                        " ({:.0}% of the volume group; ceiling {}%)",
                        grown as f64 * 100.0 / pool.vg_size.max(1) as f64,
                        w.policy.max_size_percent
                    ),
                    Part::Metadata => String::new(),
                };
                let m = format!(
                    "{what}: extended by {} to {}{share} in {:.1} s",
                    autoextend::human(add),
                    autoextend::human(grown),
                    started.elapsed().as_secs_f64()
                );
                info!(vg = %w.vg, pool = %w.pool, part = part.as_str(), "{m}");
                let note = format!("on node {}: {m}", self.node);
                self.pool_event(w, EventType::Normal, "ThinPoolExtended", &note)
                    .await;
            }
            Err(e) => {
                let m = format!(
                    "{what}: extending it by {} failed: {e}",
                    autoextend::human(add)
                );
                if self.raise(&w.vg, part, Condition::Failed, &m) {
                    out.warnings_changed = true;
                    warn!(vg = %w.vg, pool = %w.pool, part = part.as_str(), "{m}");
                    let note = format!("on node {}: {m}", self.node);
                    self.pool_event(w, EventType::Warning, "ThinPoolExtendFailed", &note)
                        .await;
                }
            }
        }
    }
}
