//! `vg-manager discover`: every block device of this machine with "eligible" or the reasons it
//! is not, offline, no cluster needed. The same rules the agent applies before touching a disk.

use std::collections::{BTreeMap, BTreeSet};

use lvm::eligibility::{Context, Verdict, judge};
use lvm::lsblk::BlockDevice;
use lvm::{Report, Runner};
use serde::Serialize;

#[derive(Debug, Serialize, PartialEq)]
pub struct Entry {
    pub device: String,
    pub size_bytes: u64,
    /// "eligible", "in volume group", or "excluded".
    pub verdict: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// Loop devices and their backing files, from `losetup --json` (none when it is unavailable).
pub fn loop_backing(runner: &dyn Runner) -> BTreeMap<String, String> {
    let Ok(out) = runner.run(
        "losetup",
        &[
            "--json".into(),
            "--list".into(),
            "--output".into(),
            "NAME,BACK-FILE".into(),
        ],
    ) else {
        return BTreeMap::new();
    };
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    v["loopdevices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| {
            Some((
                d["name"].as_str()?.to_string(),
                d["back-file"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Judges `devices` for volume group `vg` (empty: none yet), restricted to `selected` if given.
pub fn entries(
    devices: &[BlockDevice],
    report: &Report,
    vg: &str,
    selected: Option<&BTreeSet<String>>,
    loops: &BTreeMap<String, String>,
) -> Vec<Entry> {
    let ctx = Context {
        vg,
        selected,
        report: Some(report),
        loop_backing: Some(loops),
    };
    let sizes: BTreeMap<&str, u64> = devices
        .iter()
        .flat_map(|d| d.walk())
        .map(|d| (d.name.as_str(), d.size))
        .collect();
    judge(devices, &ctx)
        .into_iter()
        .map(|(device, v)| {
            let size_bytes = sizes.get(device.as_str()).copied().unwrap_or(0);
            let (verdict, reasons) = match v {
                Verdict::Eligible => ("eligible", vec![]),
                Verdict::InVolumeGroup => ("in volume group", vec![]),
                Verdict::Excluded(r) => ("excluded", r),
            };
            Entry {
                device,
                size_bytes,
                verdict,
                reasons,
            }
        })
        .collect()
}

/// The human form: one line per device.
pub fn render(entries: &[Entry]) -> String {
    let width = entries
        .iter()
        .map(|e| e.device.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = format!("{:width$}  {:>10}  VERDICT\n", "DEVICE", "SIZE");
    for e in entries {
        let size = format!("{:.1}GiB", e.size_bytes as f64 / (1u64 << 30) as f64);
        let verdict = if e.reasons.is_empty() {
            e.verdict.to_string()
        } else {
            format!("{}: {}", e.verdict, e.reasons.join("; "))
        };
        out.push_str(&format!("{:width$}  {:>10}  {verdict}\n", e.device, size));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(name: &str, fstype: &str) -> BlockDevice {
        BlockDevice {
            name: name.into(),
            kname: name.into(),
            kind: "disk".into(),
            size: 2 << 30,
            fstype: fstype.into(),
            ..Default::default()
        }
    }

    #[test]
    fn renders_verdicts_with_reasons() {
        let devices = [dev("/dev/sdb", ""), dev("/dev/sdc", "xfs")];
        let e = entries(&devices, &Report::default(), "", None, &BTreeMap::new());
        assert_eq!(e[0].verdict, "eligible");
        assert_eq!(e[1].reasons, ["has a filesystem signature (xfs)"]);
        let text = render(&e);
        assert!(text.contains("/dev/sdb      2.0GiB  eligible"), "{text}");
        assert!(
            text.contains("excluded: has a filesystem signature (xfs)"),
            "{text}"
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json[1]["reasons"][0], "has a filesystem signature (xfs)");
        assert!(json[0].get("reasons").is_none());
    }
}
