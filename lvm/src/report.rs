//! `lvm fullreport` in JSON, read into typed volume groups, physical and logical volumes. One
//! command answers every question a reconcile has; sizes are bytes (`--units b --nosuffix`).

use serde::{Deserialize, Deserializer};

use crate::error::Error;

/// The columns we read, per sub-report. Kept next to the structs that parse them.
pub const VG_FIELDS: &str =
    "vg_name,vg_uuid,vg_size,vg_free,vg_extent_size,vg_tags,pv_count,lv_count,vg_missing_pv_count";
pub const PV_FIELDS: &str = "pv_name,pv_uuid,vg_name,pv_size,pv_free,dev_size,pv_tags,pv_missing";
pub const LV_FIELDS: &str = "lv_name,vg_name,lv_uuid,lv_size,lv_attr,lv_tags,pool_lv,origin,data_percent,metadata_percent,lv_metadata_size,lv_active,lv_dm_path,lv_health_status,sync_percent,raid_sync_action";
/// Segment columns (chunk size and type live on segments); merged into the LV by its uuid.
pub const SEG_FIELDS: &str = "lv_uuid,segtype,chunk_size";

/// Arguments of the single report command.
pub fn fullreport_args() -> Vec<String> {
    // --all lists the hidden sub-volumes too: a RAID volume's images (`[lv_rimage_0]`) say
    // which members it lost. Every consumer skips them by name or attribute.
    let mut a: Vec<String> = [
        "fullreport",
        "--all",
        "--reportformat",
        "json",
        "--units",
        "b",
        "--nosuffix",
    ]
    .map(String::from)
    .to_vec();
    for (report, fields) in [
        ("vg", VG_FIELDS),
        ("pv", PV_FIELDS),
        ("lv", LV_FIELDS),
        ("seg", SEG_FIELDS),
    ] {
        a.extend([
            "--configreport".into(),
            report.into(),
            "-o".into(),
            fields.into(),
        ]);
    }
    // The PV segment sub-report is not used: ask for nothing but its key.
    a.extend([
        "--configreport".into(),
        "pvseg".into(),
        "-o".into(),
        "pv_uuid".into(),
    ]);
    a
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub vgs: Vec<VolumeGroup>,
    pub pvs: Vec<PhysicalVolume>,
    pub lvs: Vec<LogicalVolume>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct VolumeGroup {
    #[serde(rename = "vg_name")]
    pub name: String,
    #[serde(rename = "vg_uuid", default)]
    pub uuid: String,
    #[serde(rename = "vg_size", deserialize_with = "bytes")]
    pub size: u64,
    #[serde(rename = "vg_free", deserialize_with = "bytes")]
    pub free: u64,
    #[serde(rename = "vg_extent_size", deserialize_with = "bytes", default)]
    pub extent_size: u64,
    #[serde(rename = "vg_tags", deserialize_with = "tags", default)]
    pub tags: Vec<String>,
    #[serde(deserialize_with = "bytes", default)]
    pub pv_count: u64,
    #[serde(deserialize_with = "bytes", default)]
    pub lv_count: u64,
    #[serde(rename = "vg_missing_pv_count", deserialize_with = "bytes", default)]
    pub missing_pv_count: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct PhysicalVolume {
    #[serde(rename = "pv_name")]
    pub name: String,
    #[serde(rename = "pv_uuid", default)]
    pub uuid: String,
    /// Empty for an orphan PV (in no volume group).
    #[serde(rename = "vg_name", default)]
    pub vg_name: String,
    #[serde(rename = "pv_size", deserialize_with = "bytes", default)]
    pub size: u64,
    #[serde(rename = "pv_free", deserialize_with = "bytes", default)]
    pub free: u64,
    #[serde(deserialize_with = "bytes", default)]
    pub dev_size: u64,
    #[serde(rename = "pv_tags", deserialize_with = "tags", default)]
    pub tags: Vec<String>,
    #[serde(rename = "pv_missing", deserialize_with = "flag", default)]
    pub missing: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct LogicalVolume {
    #[serde(rename = "lv_name")]
    pub name: String,
    #[serde(rename = "vg_name", default)]
    pub vg_name: String,
    #[serde(rename = "lv_uuid", default)]
    pub uuid: String,
    #[serde(rename = "lv_size", deserialize_with = "bytes", default)]
    pub size: u64,
    /// The 10-character attribute string (`twi-aotz--`, `Vwi-a-tz--`, `-wi-a-----`).
    #[serde(rename = "lv_attr", default)]
    pub attr: String,
    #[serde(rename = "lv_tags", deserialize_with = "tags", default)]
    pub tags: Vec<String>,
    /// Thin pool of a thin volume; empty otherwise.
    #[serde(rename = "pool_lv", default)]
    pub pool: String,
    /// Origin of a snapshot; empty otherwise.
    #[serde(default)]
    pub origin: String,
    #[serde(deserialize_with = "percent", default)]
    pub data_percent: Option<f64>,
    #[serde(deserialize_with = "percent", default)]
    pub metadata_percent: Option<f64>,
    #[serde(rename = "lv_metadata_size", deserialize_with = "opt_bytes", default)]
    pub metadata_size: Option<u64>,
    /// From the LV's first segment (thin pools: the pool's chunk size).
    #[serde(skip)]
    pub chunk_size: Option<u64>,
    /// From the LV's first segment: thin-pool, thin, linear, striped, raid1, ...
    #[serde(skip)]
    pub segtype: String,
    #[serde(rename = "lv_active", default)]
    pub active: String,
    #[serde(rename = "lv_dm_path", default)]
    pub dm_path: String,
    /// lvm2's health of the volume: empty when fine; `partial` (a PV is missing), `refresh
    /// needed`, `mismatches exist` (RAID); `failed`, `out_of_data`... (thin pools).
    #[serde(rename = "lv_health_status", default)]
    pub health_status: String,
    /// RAID and mirror volumes: percent in sync; `None` for other volumes.
    #[serde(rename = "sync_percent", deserialize_with = "percent", default)]
    pub sync_percent: Option<f64>,
    /// RAID volumes: `idle`, `resync`, `recover`, `check`, `repair`, `frozen`, `reshape`.
    #[serde(rename = "raid_sync_action", default)]
    pub raid_sync_action: String,
}

impl LogicalVolume {
    fn attr(&self, i: usize) -> char {
        self.attr.chars().nth(i).unwrap_or('-')
    }
    pub fn is_thin_pool(&self) -> bool {
        self.attr(0) == 't'
    }
    /// A thin pool that zeroes blocks before their first use (lv_attr 8th character `z`).
    pub fn zeroes_new_blocks(&self) -> bool {
        self.is_thin_pool() && self.attr(7) == 'z'
    }
    pub fn is_thin_volume(&self) -> bool {
        self.attr(0) == 'V'
    }
    /// Hidden internal volumes (`[pool_tdata]`, `[lvol0_pmspare]`) are not user volumes.
    pub fn is_internal(&self) -> bool {
        self.name.starts_with('[') || matches!(self.attr(0), 'e' | 'i' | 'I' | 'l')
    }
    pub fn is_active(&self) -> bool {
        self.attr(4) == 'a'
    }
    /// An LVM RAID volume (segment type raid1, raid5_ls, raid10...).
    pub fn is_raid(&self) -> bool {
        self.segtype.starts_with("raid") && !self.is_internal()
    }
    /// The lv_attr health flag (9th character) or lv_health_status says a PV under it is missing.
    pub fn is_partial(&self) -> bool {
        self.attr(8) == 'p' || self.health_status == "partial"
    }
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.vg_name, self.name)
    }
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

impl VolumeGroup {
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

impl Report {
    pub fn vg(&self, name: &str) -> Option<&VolumeGroup> {
        self.vgs.iter().find(|v| v.name == name)
    }
    pub fn pvs_of<'a>(&'a self, vg: &'a str) -> impl Iterator<Item = &'a PhysicalVolume> + 'a {
        self.pvs.iter().filter(move |p| p.vg_name == vg)
    }
    pub fn lvs_of<'a>(&'a self, vg: &'a str) -> impl Iterator<Item = &'a LogicalVolume> + 'a {
        self.lvs.iter().filter(move |l| l.vg_name == vg)
    }
    pub fn lv(&self, vg: &str, name: &str) -> Option<&LogicalVolume> {
        self.lvs.iter().find(|l| l.vg_name == vg && l.name == name)
    }
    pub fn pv(&self, device: &str) -> Option<&PhysicalVolume> {
        self.pvs.iter().find(|p| p.name == device)
    }
}

/// Columns of [`pool_usage_args`]: a thin pool's fill and its volume group's room, one row per
/// named pool.
pub const POOL_FIELDS: &str = "vg_name,lv_name,lv_attr,lv_size,data_percent,metadata_percent,lv_metadata_size,vg_size,vg_free,vg_extent_size";

/// `lvs` of the named thin pools only (`vg/pool` each), far cheaper than a full report: lvm
/// reads the VG metadata and asks device-mapper for the status of these LVs alone, however many
/// thin volumes the pools hold. For polling pool fill (dmeventd does not run in the pod).
pub fn pool_usage_args(pools: &[(String, String)]) -> Vec<String> {
    let mut a: Vec<String> = [
        "lvs",
        "--reportformat",
        "json",
        "--units",
        "b",
        "--nosuffix",
        "-o",
        POOL_FIELDS,
    ]
    .map(String::from)
    .to_vec();
    a.extend(pools.iter().map(|(vg, pool)| format!("{vg}/{pool}")));
    a
}

/// One thin pool as [`pool_usage_args`] reports it, with its volume group's sizes.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct PoolUsage {
    pub vg_name: String,
    #[serde(rename = "lv_name")]
    pub name: String,
    #[serde(rename = "lv_attr", default)]
    pub attr: String,
    /// The pool's data size.
    #[serde(rename = "lv_size", deserialize_with = "bytes", default)]
    pub size: u64,
    #[serde(deserialize_with = "percent", default)]
    pub data_percent: Option<f64>,
    #[serde(deserialize_with = "percent", default)]
    pub metadata_percent: Option<f64>,
    #[serde(rename = "lv_metadata_size", deserialize_with = "opt_bytes", default)]
    pub metadata_size: Option<u64>,
    #[serde(deserialize_with = "bytes", default)]
    pub vg_size: u64,
    #[serde(deserialize_with = "bytes", default)]
    pub vg_free: u64,
    #[serde(rename = "vg_extent_size", deserialize_with = "bytes", default)]
    pub extent_size: u64,
}

impl PoolUsage {
    pub fn is_thin_pool(&self) -> bool {
        self.attr.starts_with('t')
    }
}

#[derive(Deserialize)]
struct PoolRaw {
    #[serde(default)]
    report: Vec<PoolSection>,
}

#[derive(Deserialize)]
struct PoolSection {
    #[serde(default)]
    lv: Vec<PoolUsage>,
}

/// Parses the output of [`pool_usage_args`]. Never panics.
pub fn parse_pool_usage(json: &str) -> Result<Vec<PoolUsage>, Error> {
    let raw: PoolRaw = serde_json::from_str(json).map_err(|e| Error::Parse {
        what: "lvs of the thin pools".into(),
        message: e.to_string(),
    })?;
    Ok(raw.report.into_iter().flat_map(|s| s.lv).collect())
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    report: Vec<RawSection>,
}

#[derive(Deserialize)]
struct RawSection {
    #[serde(default)]
    vg: Vec<VolumeGroup>,
    #[serde(default)]
    pv: Vec<PhysicalVolume>,
    #[serde(default)]
    lv: Vec<LogicalVolume>,
    #[serde(default)]
    seg: Vec<Segment>,
}

#[derive(Deserialize)]
struct Segment {
    #[serde(default)]
    lv_uuid: String,
    #[serde(default)]
    segtype: String,
    #[serde(deserialize_with = "opt_bytes", default)]
    chunk_size: Option<u64>,
}

/// Parses `lvm fullreport --reportformat json` output (also `vgs`/`pvs`/`lvs` JSON: the same
/// shape with one sub-report). Never panics; malformed input is an [`Error::Parse`].
pub fn parse(json: &str) -> Result<Report, Error> {
    let raw: Raw = serde_json::from_str(json).map_err(|e| Error::Parse {
        what: "lvm report".into(),
        message: e.to_string(),
    })?;
    let mut out = Report::default();
    for s in raw.report {
        out.vgs.extend(s.vg);
        // The orphan section lists PVs without a VG; a PV appears once per section it belongs to.
        out.pvs.extend(s.pv);
        let first = out.lvs.len();
        out.lvs.extend(s.lv);
        // The first segment of an LV gives its type and chunk size.
        let mut segs: std::collections::HashMap<&str, &Segment> =
            std::collections::HashMap::with_capacity(s.seg.len());
        for seg in &s.seg {
            segs.entry(seg.lv_uuid.as_str()).or_insert(seg);
        }
        for lv in &mut out.lvs[first..] {
            if let Some(seg) = segs.get(lv.uuid.as_str()) {
                lv.segtype = seg.segtype.clone();
                lv.chunk_size = seg.chunk_size.filter(|c| *c > 0);
            }
        }
    }
    out.vgs.sort_by(|a, b| a.name.cmp(&b.name));
    out.pvs.sort_by(|a, b| a.name.cmp(&b.name));
    out.pvs.dedup_by(|a, b| a.name == b.name);
    Ok(out)
}

fn number<E: serde::de::Error>(s: &str) -> Result<Option<u64>, E> {
    let t = s.trim().trim_end_matches(['B', 'b']);
    if t.is_empty() {
        return Ok(None);
    }
    // Some columns print decimals even in bytes ("4194304.00"); they are whole numbers.
    let whole = t.split('.').next().unwrap_or(t);
    whole
        .parse::<u64>()
        .map(Some)
        .map_err(|_| E::custom(format!("not a byte count: {s:?}")))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StrOrNum {
    S(String),
    N(serde_json::Number),
}

impl StrOrNum {
    fn text(self) -> String {
        match self {
            StrOrNum::S(s) => s,
            StrOrNum::N(n) => n.to_string(),
        }
    }
}

fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(number(&StrOrNum::deserialize(d)?.text())?.unwrap_or(0))
}

fn opt_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    number(&StrOrNum::deserialize(d)?.text())
}

fn percent<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let s = StrOrNum::deserialize(d)?.text();
    let t = s.trim();
    if t.is_empty() {
        return Ok(None);
    }
    t.parse::<f64>()
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("not a percentage: {s:?}")))
}

fn tags<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let s = String::deserialize(d)?;
    Ok(s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect())
}

fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let s = StrOrNum::deserialize(d)?.text();
    Ok(!matches!(s.trim(), "" | "0"))
}
