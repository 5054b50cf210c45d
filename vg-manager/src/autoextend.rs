//! Thin pools that grow before they fill (`thinPoolConfig.autoExtend`). lvm2 would do this with
//! dmeventd, which does not run in the pod, so the agent polls the pools itself: one `lvs` of the
//! watched pools every [`POLL`], apart from the 60 s resync, so a pool filling at disk speed is
//! caught in seconds. Even when the pool does fill before the next poll, writes are not lost:
//! a pool created without `--errorwhenfull y` queues them (60 s, dm-thin's `no_space_timeout`)
//! until it is extended.
//!
//! What to do is decided here, purely, from the pool's and the VG's sizes and the policy
//! ([`decide`]); the agent ([`crate::agent::Agent::poll_pools`]) runs the commands and reports.

use std::time::Duration;

use lvm::PoolUsage;
use lvms_api::ThinPoolAutoExtend;

/// How often the watched pools are read while none is being written. An `lvs` of a few pools
/// costs milliseconds on a node.
pub const POLL: Duration = Duration::from_secs(2);
/// How often while a pool's use is changing: a disk writing 1 GB/s fills 500 MB between two
/// looks, and the extension itself takes a moment (lvm suspends the pool under load).
pub const POLL_BUSY: Duration = Duration::from_millis(500);
/// How far ahead an extension is sized: the next look ([`POLL_BUSY`]) plus the time an
/// lvextend of a pool under write load takes (lvm suspends the pool, flushing what is in
/// flight: 1.7 to 3.6 s measured in the guest, tests/vm_autoextend.rs), with room to spare.
/// Too far only reaches the ceiling sooner; too near lets a fast writer fill the pool (its
/// writes then wait, queued, for the extension).
pub const LOOKAHEAD: Duration = Duration::from_secs(5);

/// The wait before the next look: short while a pool's use moves.
pub fn next_poll(busy: bool) -> Duration {
    if busy { POLL_BUSY } else { POLL }
}

/// What each part of a pool is expected to gain before the next extension could follow this
/// one: its rate between the last two looks times [`LOOKAHEAD`]. A pool filling fast gets as
/// many steps at once as that needs; a still one gets its one step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    pub data: u64,
    pub metadata: u64,
}

/// Bytes used of each part (data, metadata), from one look.
pub fn used(pool: &Pool) -> (u64, u64) {
    (
        (pool.data_size as f64 * pool.data_percent / 100.0) as u64,
        (pool.metadata_size as f64 * pool.metadata_percent / 100.0) as u64,
    )
}

/// [`Expected`] from the use at two looks `secs` apart (none for a use that fell, or looks
/// too close together to tell a rate).
pub fn expected(before: (u64, u64), now: (u64, u64), secs: f64) -> Expected {
    if secs < 0.05 {
        return Expected::default();
    }
    let ahead = LOOKAHEAD.as_secs_f64() / secs;
    let gain = |b: u64, n: u64| (n.saturating_sub(b) as f64 * ahead) as u64;
    Expected {
        data: gain(before.0, now.0),
        metadata: gain(before.1, now.1),
    }
}

/// lvm2's largest thin pool metadata (DM_THIN_MAX_METADATA_SIZE, 15.81 GiB): it refuses more.
pub const MAX_METADATA: u64 = 33_161_216 * 512;

/// A class's `autoExtend`, clamped to the CRD's bounds (an object stored under an older CRD is
/// not trusted to have them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub threshold_percent: u8,
    pub step_percent: u8,
    pub max_size_percent: u8,
}

impl From<&ThinPoolAutoExtend> for Policy {
    fn from(a: &ThinPoolAutoExtend) -> Self {
        Self {
            threshold_percent: a.threshold_percent.clamp(50, 95) as u8,
            step_percent: a.step_percent.clamp(1, 50) as u8,
            max_size_percent: a.max_size_percent.clamp(1, 100) as u8,
        }
    }
}

/// A pool and its volume group as one `lvs` of the pool reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Pool {
    pub data_size: u64,
    pub data_percent: f64,
    pub metadata_size: u64,
    pub metadata_percent: f64,
    pub vg_size: u64,
    pub vg_free: u64,
    pub extent_size: u64,
}

impl From<&PoolUsage> for Pool {
    fn from(u: &PoolUsage) -> Self {
        Self {
            data_size: u.size,
            data_percent: u.data_percent.unwrap_or(0.0),
            metadata_size: u.metadata_size.unwrap_or(0),
            metadata_percent: u.metadata_percent.unwrap_or(0.0),
            vg_size: u.vg_size,
            vg_free: u.vg_free,
            extent_size: u.extent_size,
        }
    }
}

/// Why a pool over its threshold is not extended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Blocked {
    /// The data is at `maxSizePercent` of the volume group.
    AtCeiling,
    /// The volume group has no free extent left for it.
    VgFull,
    /// The metadata is at lvm2's maximum ([`MAX_METADATA`]).
    MetadataAtMaximum,
}

/// What to do with one part (data or metadata) of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Under the threshold: nothing.
    Below,
    /// Over it: grow by this many bytes (whole extents).
    Grow(u64),
    /// Over it, and it cannot grow.
    Blocked(Blocked),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub data: Verdict,
    pub metadata: Verdict,
}

/// The pool's data or metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    Data,
    Metadata,
}

impl Part {
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Data => "data",
            Part::Metadata => "metadata",
        }
    }
}

/// The whole steps (each `step` extents) that bring what a part now `size` extents big uses
/// (`percent`) and is expected to gain (`gain` extents) under `threshold` percent: at least one,
/// so a pool exactly at its threshold grows.
fn steps_needed(size: u64, percent: f64, gain: f64, threshold: u8, step: u64) -> u64 {
    let used = size as f64 * percent / 100.0 + gain;
    // The size at which `used` is exactly the threshold; one more step than reaches it.
    let target = used * 100.0 / threshold as f64;
    let short = (target - size as f64).max(0.0);
    (short / step.max(1) as f64).floor() as u64 + 1
}

/// What the policy asks of `pool` now, sized for what it is `expected` to gain meanwhile.
/// Metadata is served first from the free extents (a pool whose metadata fills stops serving
/// every volume; its data filling only queues writes), with twice its growth set aside: lvm2
/// grows the metadata spare (`lvol0_pmspare`) with it. Data grows by `stepPercent` of the volume
/// group (more steps at once when one would not bring the use, with what it is expected to gain,
/// back under the threshold), never past `maxSizePercent` of the volume group, and a remainder
/// under one step below that ceiling goes with the last step. Metadata grows by `stepPercent` of
/// its own size, as lvm2's own autoextend does, never past lvm2's maximum.
pub fn decide(pool: &Pool, policy: &Policy, expected: Expected) -> Decision {
    let e = pool.extent_size.max(1);
    let mut free = pool.vg_free / e;
    let threshold = policy.threshold_percent as f64;

    let metadata = if pool.metadata_size == 0 || pool.metadata_percent < threshold {
        Verdict::Below
    } else {
        let size = pool.metadata_size.div_ceil(e);
        let step = (pool.metadata_size * policy.step_percent as u64 / 100 / e).max(1);
        let gain = expected.metadata as f64 / e as f64;
        let want = step
            * steps_needed(
                size,
                pool.metadata_percent,
                gain,
                policy.threshold_percent,
                step,
            );
        let room = (MAX_METADATA / e).saturating_sub(size);
        let add = want.min(room).min(free / 2);
        if room == 0 {
            Verdict::Blocked(Blocked::MetadataAtMaximum)
        } else if add == 0 {
            Verdict::Blocked(Blocked::VgFull)
        } else {
            free -= 2 * add;
            Verdict::Grow(add * e)
        }
    };

    let data = if pool.data_percent < threshold {
        Verdict::Below
    } else {
        let vg = pool.vg_size / e;
        let size = pool.data_size.div_ceil(e);
        let step = (vg * policy.step_percent as u64 / 100).max(1);
        let gain = expected.data as f64 / e as f64;
        let want = step
            * steps_needed(
                size,
                pool.data_percent,
                gain,
                policy.threshold_percent,
                step,
            );
        let ceiling = vg * policy.max_size_percent as u64 / 100;
        let room = ceiling.saturating_sub(size);
        // Less than a step would be left under the ceiling: take it now, rather than come back
        // for a sliver at the next look.
        let want = if room.saturating_sub(want) < step {
            room
        } else {
            want
        };
        let add = want.min(room).min(free);
        if room == 0 {
            Verdict::Blocked(Blocked::AtCeiling)
        } else if add == 0 {
            Verdict::Blocked(Blocked::VgFull)
        } else {
            Verdict::Grow(add * e)
        }
    };
    Decision { data, metadata }
}

/// `bytes` for a person: MiB below 10 GiB, else GiB, one decimal.
pub fn human(bytes: u64) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    const GIB: f64 = (1u64 << 30) as f64;
    let b = bytes as f64;
    if b < 10.0 * GIB {
        format!("{:.1} MiB", b / MIB)
    } else {
        format!("{:.1} GiB", b / GIB)
    }
}

/// The words of a warning (an Event's note, the class's status reason, the log).
pub fn blocked_message(
    vg: &str,
    pool_name: &str,
    part: Part,
    why: Blocked,
    pool: &Pool,
    policy: &Policy,
) -> String {
    let (size, percent) = match part {
        Part::Data => (pool.data_size, pool.data_percent),
        Part::Metadata => (pool.metadata_size, pool.metadata_percent),
    };
    let head = format!(
        "thin pool {vg}/{pool_name} {} is {percent:.1}% full ({} of {}), over the autoExtend threshold of {}%",
        part.as_str(),
        human((size as f64 * percent / 100.0) as u64),
        human(size),
        policy.threshold_percent
    );
    let tail = match why {
        Blocked::AtCeiling => format!(
            "and at its ceiling, maxSizePercent {} of the volume group: it is not extended further; free space in its volumes or raise maxSizePercent",
            policy.max_size_percent
        ),
        Blocked::VgFull => {
            "and the volume group has no free extents left: add a disk to the device class"
                .to_string()
        }
        Blocked::MetadataAtMaximum => format!(
            "and at lvm2's largest thin pool metadata ({}): it cannot grow",
            human(MAX_METADATA)
        ),
    };
    format!("{head}, {tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const E: u64 = 4 * MIB;
    const NONE: Expected = Expected {
        data: 0,
        metadata: 0,
    };

    fn policy(threshold: u8, step: u8, max: u8) -> Policy {
        Policy {
            threshold_percent: threshold,
            step_percent: step,
            max_size_percent: max,
        }
    }

    /// A 1000-extent (4000 MiB) VG with a pool of `data` extents `percent` full and 4 MiB of
    /// metadata 10 % full; what the pool and its metadata and spare leave free.
    fn pool(data: u64, percent: f64) -> Pool {
        Pool {
            data_size: data * E,
            data_percent: percent,
            metadata_size: E,
            metadata_percent: 10.0,
            vg_size: 1000 * E,
            vg_free: (1000 - data - 2) * E,
            extent_size: E,
        }
    }

    #[test]
    fn under_the_threshold_nothing_happens() {
        let d = decide(&pool(500, 69.9), &policy(70, 10, 90), NONE);
        assert_eq!(
            d,
            Decision {
                data: Verdict::Below,
                metadata: Verdict::Below
            }
        );
    }

    #[test]
    fn at_the_threshold_data_grows_by_one_step_of_the_vg() {
        let d = decide(&pool(500, 70.0), &policy(70, 10, 90), NONE);
        assert_eq!(d.data, Verdict::Grow(100 * E), "10 % of 1000 extents");
        assert_eq!(d.metadata, Verdict::Below);
    }

    #[test]
    fn far_over_the_threshold_takes_as_many_steps_as_bring_it_back_under() {
        // 500 extents 100 % full: under 70 % needs more than 714 extents, so three steps.
        let d = decide(&pool(500, 100.0), &policy(70, 10, 100), NONE);
        assert_eq!(d.data, Verdict::Grow(300 * E));
        let after = (500.0 * 1.0) / 800.0;
        assert!(after < 0.70, "{after}");
    }

    #[test]
    fn the_ceiling_cuts_the_last_step_short_then_blocks() {
        // maxSizePercent 85 = 850 extents; at 800 only 50 remain of the 100-extent step.
        let p = policy(70, 10, 85);
        assert_eq!(
            decide(&pool(800, 75.0), &p, NONE).data,
            Verdict::Grow(50 * E)
        );
        assert_eq!(
            decide(&pool(850, 75.0), &p, NONE).data,
            Verdict::Blocked(Blocked::AtCeiling)
        );
        // Above the ceiling (a VG that lost a disk, or sizePercent raised by hand): blocked.
        assert_eq!(
            decide(&pool(900, 75.0), &p, NONE).data,
            Verdict::Blocked(Blocked::AtCeiling)
        );
    }

    #[test]
    fn less_than_a_step_under_the_ceiling_is_taken_with_the_last_step() {
        // Ceiling 850; at 700 one step (100) would leave 50: all 150 at once.
        assert_eq!(
            decide(&pool(700, 75.0), &policy(70, 10, 85), NONE).data,
            Verdict::Grow(150 * E)
        );
        // At 600 one step leaves 150, a step and more: one step.
        assert_eq!(
            decide(&pool(600, 75.0), &policy(70, 10, 85), NONE).data,
            Verdict::Grow(100 * E)
        );
    }

    #[test]
    fn the_free_extents_cut_the_step_short_then_block() {
        let mut p = pool(500, 80.0);
        p.vg_free = 30 * E;
        assert_eq!(
            decide(&p, &policy(70, 10, 100), NONE).data,
            Verdict::Grow(30 * E)
        );
        p.vg_free = 0;
        assert_eq!(
            decide(&p, &policy(70, 10, 100), NONE).data,
            Verdict::Blocked(Blocked::VgFull)
        );
    }

    #[test]
    fn metadata_grows_by_a_step_of_its_own_size_with_room_for_its_spare_and_first() {
        let mut p = pool(500, 90.0);
        p.metadata_size = 100 * E;
        p.metadata_percent = 75.0;
        p.vg_free = 120 * E;
        let d = decide(&p, &policy(70, 10, 100), NONE);
        assert_eq!(d.metadata, Verdict::Grow(10 * E), "10 % of its 100 extents");
        assert_eq!(
            d.data,
            Verdict::Grow(100 * E),
            "what is left after the metadata and its spare: 120 − 20"
        );
        // Tiny metadata still grows by one extent.
        let mut small = pool(500, 10.0);
        small.metadata_percent = 95.0;
        assert_eq!(
            decide(&small, &policy(70, 10, 100), NONE).metadata,
            Verdict::Grow(E),
            "a step of 10 % of one extent is one extent, and one more brings 95 % to 47.5 %"
        );
        // With one free extent the spare could not follow: blocked, not half-done.
        small.vg_free = E;
        assert_eq!(
            decide(&small, &policy(70, 10, 100), NONE).metadata,
            Verdict::Blocked(Blocked::VgFull)
        );
    }

    #[test]
    fn metadata_stops_at_lvm2s_maximum() {
        let mut p = pool(500, 10.0);
        p.metadata_size = MAX_METADATA / E * E;
        p.metadata_percent = 80.0;
        p.vg_size = 100_000 * E;
        p.vg_free = 50_000 * E;
        assert_eq!(
            decide(&p, &policy(70, 10, 100), NONE).metadata,
            Verdict::Blocked(Blocked::MetadataAtMaximum)
        );
        p.metadata_size -= 10 * E;
        assert_eq!(
            decide(&p, &policy(70, 10, 100), NONE).metadata,
            Verdict::Grow(10 * E),
            "up to the maximum, not past it"
        );
    }

    #[test]
    fn a_pool_filling_fast_gets_the_steps_its_rate_needs() {
        // 500 extents at 70 %: one step for a still pool; one expected to gain 200 extents
        // over the lookahead must hold 550 under 70 %: three steps (550 of 800 is 68.75 %).
        let p = pool(500, 70.0);
        let fast = Expected {
            data: 200 * E,
            metadata: 0,
        };
        assert_eq!(
            decide(&p, &policy(70, 10, 100), NONE).data,
            Verdict::Grow(100 * E)
        );
        assert_eq!(
            decide(&p, &policy(70, 10, 100), fast).data,
            Verdict::Grow(300 * E)
        );
        // Never past the ceiling.
        assert_eq!(
            decide(&p, &policy(70, 10, 70), fast).data,
            Verdict::Grow(200 * E)
        );
        // Below the threshold a rate alone extends nothing: the threshold is the policy.
        assert_eq!(
            decide(&pool(500, 50.0), &policy(70, 10, 100), fast).data,
            Verdict::Below
        );
    }

    #[test]
    fn the_rate_comes_from_two_looks() {
        let before = (100 * MIB, MIB);
        let now = (150 * MIB, MIB);
        let e = expected(before, now, 0.5);
        assert_eq!(e.data, 500 * MIB, "100 MiB/s over the 5 s lookahead");
        assert_eq!(e.metadata, 0);
        assert_eq!(
            expected(now, before, 0.5),
            Expected::default(),
            "freed space is no rate"
        );
        assert_eq!(expected(before, now, 0.0), Expected::default());
        let p = pool(500, 50.0);
        assert_eq!(used(&p), (250 * E, (E as f64 * 0.1) as u64));
        assert_eq!(next_poll(true), POLL_BUSY);
        assert_eq!(next_poll(false), POLL);
    }

    #[test]
    fn a_policy_from_an_older_crd_is_clamped() {
        let p = Policy::from(&ThinPoolAutoExtend {
            threshold_percent: 10,
            step_percent: 0,
            max_size_percent: 500,
        });
        assert_eq!(p, policy(50, 1, 100));
    }

    #[test]
    fn the_warning_names_the_pool_the_part_and_the_way_out() {
        let p = pool(850, 80.0);
        let m = blocked_message(
            "vg1",
            "pool",
            Part::Data,
            Blocked::AtCeiling,
            &p,
            &policy(70, 10, 85),
        );
        assert_eq!(
            m,
            "thin pool vg1/pool data is 80.0% full (2720.0 MiB of 3400.0 MiB), over the autoExtend threshold of 70%, and at its ceiling, maxSizePercent 85 of the volume group: it is not extended further; free space in its volumes or raise maxSizePercent"
        );
    }
}
