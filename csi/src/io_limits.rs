//! Per-volume I/O limits: a volume's bandwidth and operations per second are quotas as its size
//! is. StorageClass parameters (through `storageClassOptions.additionalParameters`):
//! `lvms.topolvm.io/read-bps`, `-write-bps`, `-read-iops`, `-write-iops`, each absolute, or with
//! the suffix `-per-gib` a rate per GiB of the volume's size (a 10 GiB volume with
//! `read-bps-per-gib: 10Mi` may read 100 MiB/s). CreateVolume checks them and carries them to
//! the node in the volume context under the same keys; NodePublishVolume writes them into the
//! pod's cgroup (v2 `io.max`) for the volume's device.

use std::collections::HashMap;

use tonic::Status;

const PREFIX: &str = "lvms.topolvm.io/";
const PER_GIB: &str = "-per-gib";
const GIB: u64 = 1 << 30;

/// The four limits `io.max` knows, with their parameter names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    ReadBps,
    WriteBps,
    ReadIops,
    WriteIops,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::ReadBps,
        Kind::WriteBps,
        Kind::ReadIops,
        Kind::WriteIops,
    ];

    /// The parameter's name after `lvms.topolvm.io/`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::ReadBps => "read-bps",
            Kind::WriteBps => "write-bps",
            Kind::ReadIops => "read-iops",
            Kind::WriteIops => "write-iops",
        }
    }

    /// Its key in `io.max`.
    pub fn io_max_key(self) -> &'static str {
        match self {
            Kind::ReadBps => "rbps",
            Kind::WriteBps => "wbps",
            Kind::ReadIops => "riops",
            Kind::WriteIops => "wiops",
        }
    }

    fn bytes(self) -> bool {
        matches!(self, Kind::ReadBps | Kind::WriteBps)
    }
}

/// One limit: a rate, or a rate per GiB of the volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Absolute(u64),
    PerGib(u64),
}

/// The limits a volume asks for; empty when it asks for none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoLimits(pub Vec<(Kind, Limit)>);

/// A rate: digits with an optional suffix; bytes take `Ki`, `Mi`, `Gi`, `Ti` (powers of 1024) or
/// `k`, `M`, `G`, `T` (powers of 1000), operations the decimal ones only. Zero is no limit and is
/// refused (leave the parameter out).
fn parse_rate(value: &str, bytes: bool) -> Result<u64, String> {
    let v = value.trim();
    let digits = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, suffix) = v.split_at(digits);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{value:?} is not a whole number with an optional unit"))?;
    let factor: u64 = match (suffix, bytes) {
        ("", _) => 1,
        ("k", _) => 1_000,
        ("M", _) => 1_000_000,
        ("G", _) => 1_000_000_000,
        ("T", _) => 1_000_000_000_000,
        ("Ki", true) => 1 << 10,
        ("Mi", true) => 1 << 20,
        ("Gi", true) => 1 << 30,
        ("Ti", true) => 1 << 40,
        (other, true) => return Err(format!("unit {other:?}: use Ki, Mi, Gi, Ti, k, M, G or T")),
        (other, false) => return Err(format!("unit {other:?}: operations take k, M, G or T")),
    };
    let rate = n
        .checked_mul(factor)
        .ok_or_else(|| format!("{value:?} is too large"))?;
    if rate == 0 {
        return Err("0 is no limit: leave the parameter out".into());
    }
    Ok(rate)
}

impl IoLimits {
    /// The limits in StorageClass parameters or a volume context; errors name the field
    /// (`{field}[lvms.topolvm.io/read-bps]`).
    pub fn from_map(map: &HashMap<String, String>, field: &str) -> Result<Self, Status> {
        let mut out = Vec::new();
        for kind in Kind::ALL {
            let absolute = format!("{PREFIX}{}", kind.name());
            let per_gib = format!("{absolute}{PER_GIB}");
            let bad =
                |key: &str, e: String| Status::invalid_argument(format!("{field}[{key}]: {e}"));
            match (map.get(&absolute), map.get(&per_gib)) {
                (Some(_), Some(_)) => {
                    return Err(Status::invalid_argument(format!(
                        "{field}[{absolute}] and {field}[{per_gib}]: give one of the two"
                    )));
                }
                (Some(v), None) => out.push((
                    kind,
                    Limit::Absolute(parse_rate(v, kind.bytes()).map_err(|e| bad(&absolute, e))?),
                )),
                (None, Some(v)) => out.push((
                    kind,
                    Limit::PerGib(parse_rate(v, kind.bytes()).map_err(|e| bad(&per_gib, e))?),
                )),
                (None, None) => {}
            }
        }
        Ok(IoLimits(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The volume-context entries that carry them to the node, as the parameters named them.
    pub fn volume_context(&self) -> HashMap<String, String> {
        self.0
            .iter()
            .map(|(kind, limit)| match limit {
                Limit::Absolute(v) => (format!("{PREFIX}{}", kind.name()), v.to_string()),
                Limit::PerGib(v) => (format!("{PREFIX}{}{PER_GIB}", kind.name()), v.to_string()),
            })
            .collect()
    }

    /// The rates for a volume of `size` bytes. A per-GiB rate counts started GiB (a volume is
    /// never below its first GiB's share), and never less than 1.
    pub fn resolve(&self, size: u64) -> Vec<(Kind, u64)> {
        let gibs = size.div_ceil(GIB).max(1);
        self.0
            .iter()
            .map(|(kind, limit)| {
                let rate = match limit {
                    Limit::Absolute(v) => *v,
                    Limit::PerGib(v) => v.saturating_mul(gibs),
                };
                (*kind, rate.max(1))
            })
            .collect()
    }

    /// Whether a limit depends on the size (expansion must write it again).
    pub fn scales(&self) -> bool {
        self.0.iter().any(|(_, l)| matches!(l, Limit::PerGib(_)))
    }
}

/// The `io.max` line that sets `rates` for device `major:minor`; the kinds not given are `max`
/// (unlimited), so the line replaces whatever was set before.
pub fn io_max_line((major, minor): (u32, u32), rates: &[(Kind, u64)]) -> String {
    let mut line = format!("{major}:{minor}");
    for kind in Kind::ALL {
        let value = rates
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or("max".to_string(), |(_, v)| v.to_string());
        line.push_str(&format!(" {}={value}", kind.io_max_key()));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn absolute_and_per_gib_rates_with_units() {
        let l = IoLimits::from_map(
            &map(&[
                ("lvms.topolvm.io/read-bps", "100Mi"),
                ("lvms.topolvm.io/write-bps-per-gib", "10M"),
                ("lvms.topolvm.io/read-iops-per-gib", "50"),
                ("other", "x"),
            ]),
            "parameters",
        )
        .unwrap();
        assert_eq!(
            l.0,
            [
                (Kind::ReadBps, Limit::Absolute(100 << 20)),
                (Kind::WriteBps, Limit::PerGib(10_000_000)),
                (Kind::ReadIops, Limit::PerGib(50)),
            ]
        );
        assert!(l.scales());
        // 10 GiB, and 10 GiB plus a byte (started GiB count).
        assert_eq!(
            l.resolve(10 * GIB),
            [
                (Kind::ReadBps, 100 << 20),
                (Kind::WriteBps, 100_000_000),
                (Kind::ReadIops, 500)
            ]
        );
        assert_eq!(l.resolve(10 * GIB + 1)[2], (Kind::ReadIops, 550));
        assert_eq!(
            l.resolve(1)[2],
            (Kind::ReadIops, 50),
            "one GiB's share at least"
        );
        // Through the volume context and back, unchanged.
        let back = IoLimits::from_map(&l.volume_context(), "volume_context").unwrap();
        assert_eq!(back, l);
        assert!(
            IoLimits::from_map(&map(&[]), "parameters")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn bad_values_are_named() {
        let err = |pairs: &[(&str, &str)]| {
            IoLimits::from_map(&map(pairs), "parameters")
                .unwrap_err()
                .message()
                .to_string()
        };
        assert_eq!(
            err(&[("lvms.topolvm.io/read-bps", "fast")]),
            "parameters[lvms.topolvm.io/read-bps]: \"fast\" is not a whole number with an optional unit"
        );
        assert!(
            err(&[("lvms.topolvm.io/read-iops", "10Ki")])
                .starts_with("parameters[lvms.topolvm.io/read-iops]: unit \"Ki\": operations take")
        );
        assert!(err(&[("lvms.topolvm.io/write-bps", "0")]).contains("0 is no limit"));
        assert!(err(&[("lvms.topolvm.io/write-bps", "99999999999999T")]).contains("too large"));
        assert!(
            err(&[
                ("lvms.topolvm.io/write-iops", "1"),
                ("lvms.topolvm.io/write-iops-per-gib", "1")
            ])
            .contains("give one of the two")
        );
    }

    #[test]
    fn io_max_lines_set_every_key() {
        assert_eq!(
            io_max_line((253, 3), &[(Kind::ReadBps, 1000), (Kind::WriteIops, 20)]),
            "253:3 rbps=1000 wbps=max riops=max wiops=20"
        );
        assert_eq!(
            io_max_line((8, 16), &[]),
            "8:16 rbps=max wbps=max riops=max wiops=max",
            "no rates: the entry is removed"
        );
    }
}
