//! Block devices from `lsblk --json --bytes --paths`, as a tree (children are partitions and
//! device-mapper holders).

use serde::{Deserialize, Deserializer};

use crate::error::Error;
use crate::runner::Runner;

/// The columns read. Kept in sync with [`BlockDevice`].
pub const COLUMNS: &str = "NAME,KNAME,PKNAME,MAJ:MIN,TYPE,SIZE,RO,RM,FSTYPE,PTTYPE,PARTLABEL,STATE,MOUNTPOINTS,SERIAL,MODEL,WWN";

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct BlockDevice {
    /// Path, e.g. /dev/sdb (with --paths).
    pub name: String,
    #[serde(default, deserialize_with = "text")]
    pub kname: String,
    #[serde(default, deserialize_with = "text")]
    pub pkname: String,
    /// The device number, `major:minor`: what a mount table names a filesystem's device by.
    #[serde(rename = "maj:min", default, deserialize_with = "text")]
    pub maj_min: String,
    /// disk, part, lvm, rom, loop, crypt, raid1, ...
    #[serde(rename = "type", default, deserialize_with = "text")]
    pub kind: String,
    #[serde(default, deserialize_with = "size")]
    pub size: u64,
    #[serde(default, deserialize_with = "boolish")]
    pub ro: bool,
    #[serde(default, deserialize_with = "boolish")]
    pub rm: bool,
    #[serde(default, deserialize_with = "text")]
    pub fstype: String,
    /// Partition table type (`gpt`, `dos`) of a disk that has one, partitions or not.
    #[serde(default, deserialize_with = "text")]
    pub pttype: String,
    #[serde(default, deserialize_with = "text")]
    pub partlabel: String,
    #[serde(default, deserialize_with = "text")]
    pub state: String,
    #[serde(default, deserialize_with = "mountpoints")]
    pub mountpoints: Vec<String>,
    #[serde(default, deserialize_with = "text")]
    pub serial: String,
    #[serde(default, deserialize_with = "text")]
    pub model: String,
    #[serde(default, deserialize_with = "text")]
    pub wwn: String,
    #[serde(default)]
    pub children: Vec<BlockDevice>,
}

impl BlockDevice {
    /// [`Self::maj_min`] as numbers, if lsblk gave it.
    pub fn devno(&self) -> Option<(u32, u32)> {
        let (major, minor) = self.maj_min.split_once(':')?;
        Some((major.trim().parse().ok()?, minor.trim().parse().ok()?))
    }

    /// This device and every descendant, depth first.
    pub fn walk(&self) -> Vec<&BlockDevice> {
        let mut out = vec![self];
        for c in &self.children {
            out.extend(c.walk());
        }
        out
    }
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    blockdevices: Vec<BlockDevice>,
}

/// Parses lsblk's JSON (both the old all-strings and the newer typed form). Never panics.
pub fn parse(json: &str) -> Result<Vec<BlockDevice>, Error> {
    serde_json::from_str::<Raw>(json)
        .map(|r| r.blockdevices)
        .map_err(|e| Error::Parse {
            what: "lsblk".into(),
            message: e.to_string(),
        })
}

pub fn args() -> Vec<String> {
    ["--json", "--bytes", "--paths", "--output", COLUMNS]
        .map(String::from)
        .to_vec()
}

/// Lists the block devices of the machine.
pub fn list(runner: &dyn Runner) -> Result<Vec<BlockDevice>, Error> {
    parse(&runner.run("lsblk", &args())?.stdout)
}

fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<serde_json::Value>::deserialize(d)?
        .map(|v| match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        })
        .unwrap_or_default())
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| serde::de::Error::custom("negative size")),
        Some(serde_json::Value::String(s)) if s.is_empty() => Ok(0),
        Some(serde_json::Value::String(s)) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("bad size {s:?}"))),
        Some(serde_json::Value::Null) | None => Ok(0),
        Some(other) => Err(serde::de::Error::custom(format!("bad size {other}"))),
    }
}

fn boolish<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::Bool(b)) => b,
        Some(serde_json::Value::String(s)) => s == "1" || s == "true",
        Some(serde_json::Value::Number(n)) => n.as_u64() == Some(1),
        _ => false,
    })
}

fn mountpoints<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::Array(a)) => a
            .into_iter()
            .filter_map(|v| v.as_str().map(String::from))
            .filter(|s| !s.is_empty())
            .collect(),
        Some(serde_json::Value::String(s)) if !s.is_empty() => vec![s],
        _ => vec![],
    })
}
