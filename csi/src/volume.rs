//! Rules both halves of the driver apply to a request: which access modes and filesystems we
//! serve, and how a capacity range becomes a size (the contract's minimums and default).

use tonic::Status;

use crate::pb::volume_capability::access_mode::Mode;
use crate::pb::volume_capability::{AccessType, MountVolume};
use crate::pb::{CapacityRange, VolumeCapability};

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
/// Size of a volume whose request names none.
pub const DEFAULT_SIZE: u64 = GIB;
/// LVM allocates whole extents (4 MiB unless the VG was made otherwise): sizes are rounded up
/// to them here, so the size we report is the size the node creates.
pub const ROUNDING: u64 = 4 * MIB;
/// Filesystems the node can make and grow; xfs when the request names none.
pub const FILESYSTEMS: &[&str] = &["xfs", "ext4"];
pub const DEFAULT_FS: &str = "xfs";

/// What a volume will be used as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Usage {
    Block,
    Filesystem(String),
}

impl Usage {
    /// The smallest volume that holds a working filesystem of this kind (or a block device).
    pub fn min_size(&self) -> u64 {
        match self {
            Usage::Block => 8 * MIB,
            Usage::Filesystem(fs) if fs == "ext4" => 32 * MIB,
            Usage::Filesystem(_) => 300 * MIB,
        }
    }
}

/// Checks one capability; the error names the field. Every mode is single-node: an LV lives
/// on one node. Several pods on that node may share it (SINGLE_NODE_MULTI_WRITER).
pub fn check(cap: &VolumeCapability, field: &str) -> Result<Usage, Status> {
    let mode = cap
        .access_mode
        .as_ref()
        .ok_or_else(|| Status::invalid_argument(format!("{field}.access_mode is required")))?
        .mode;
    match Mode::try_from(mode) {
        Ok(Mode::SingleNodeWriter | Mode::SingleNodeSingleWriter | Mode::SingleNodeMultiWriter) => {
        }
        Ok(m) => {
            return Err(Status::invalid_argument(format!(
                "{field}.access_mode {}: a local volume is reachable from one node only",
                m.as_str_name()
            )));
        }
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "{field}.access_mode {mode} is not a CSI access mode"
            )));
        }
    }
    match &cap.access_type {
        Some(AccessType::Block(_)) => Ok(Usage::Block),
        Some(AccessType::Mount(MountVolume { fs_type, .. })) => {
            let fs = if fs_type.is_empty() {
                DEFAULT_FS
            } else {
                fs_type
            };
            if FILESYSTEMS.contains(&fs) {
                Ok(Usage::Filesystem(fs.to_string()))
            } else {
                Err(Status::invalid_argument(format!(
                    "{field}.mount.fs_type {fs:?} is not supported (xfs or ext4)"
                )))
            }
        }
        None => Err(Status::invalid_argument(format!(
            "{field}.access_type is required (block or mount)"
        ))),
    }
}

/// Checks every capability of a request; at least one is required. Returns the strictest usage
/// (the largest minimum size).
pub fn check_all(caps: &[VolumeCapability], field: &str) -> Result<Usage, Status> {
    if caps.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    let mut usages = caps
        .iter()
        .enumerate()
        .map(|(i, c)| check(c, &format!("{field}[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    usages.sort_by_key(Usage::min_size);
    Ok(usages.pop().expect("not empty"))
}

/// The size to create for `range`: the required bytes (or the default when none are named),
/// at least the usage's minimum, rounded up to whole extents, and never above the limit.
pub fn size_for(range: Option<&CapacityRange>, usage: &Usage) -> Result<u64, Status> {
    let (required, limit) = range.map_or((0, 0), |r| (r.required_bytes, r.limit_bytes));
    if required < 0 || limit < 0 {
        return Err(Status::invalid_argument(
            "capacity_range: required_bytes and limit_bytes cannot be negative",
        ));
    }
    let (required, limit) = (required as u64, limit as u64);
    if limit > 0 && required > limit {
        return Err(Status::out_of_range(format!(
            "capacity_range: required_bytes {required} exceeds limit_bytes {limit}"
        )));
    }
    let wanted = if required > 0 {
        required
    } else if limit > 0 {
        DEFAULT_SIZE.min(limit)
    } else {
        DEFAULT_SIZE
    };
    let size = round_up(wanted.max(usage.min_size()));
    if limit > 0 && size > limit {
        return Err(Status::out_of_range(format!(
            "capacity_range: the smallest volume we can make is {size} bytes (whole {} MiB extents, at least {} bytes for {usage:?}), above limit_bytes {limit}",
            ROUNDING / MIB,
            usage.min_size()
        )));
    }
    Ok(size)
}

/// Where cryptsetup's LUKS2 puts the data by default: the header and its key slots take the
/// first 16 MiB of an encrypted volume.
pub const LUKS2_HEADER: u64 = 16 * MIB;

/// An encrypted volume's size: `size` (from [`size_for`]) raised, when needed, so the device
/// inside the header still holds the usage's smallest filesystem (xfs refuses less than
/// 300 MB). The header is not added to sizes above that: a claim for 1 GiB gets a 1 GiB LV, as
/// with other CSI drivers that encrypt.
pub fn encrypted_size(
    size: u64,
    range: Option<&CapacityRange>,
    usage: &Usage,
) -> Result<u64, Status> {
    let size = size.max(round_up(usage.min_size() + LUKS2_HEADER));
    let limit = range.map_or(0, |r| r.limit_bytes.max(0) as u64);
    if limit > 0 && size > limit {
        return Err(Status::out_of_range(format!(
            "capacity_range: an encrypted volume needs at least {size} bytes (its smallest filesystem and the {} MiB LUKS2 header), above limit_bytes {limit}",
            LUKS2_HEADER / MIB
        )));
    }
    Ok(size)
}

pub fn round_up(bytes: u64) -> u64 {
    bytes.div_ceil(ROUNDING) * ROUNDING
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::volume_capability::{AccessMode, BlockVolume};

    fn cap(mode: Mode, access: Option<AccessType>) -> VolumeCapability {
        VolumeCapability {
            access_type: access,
            access_mode: Some(AccessMode { mode: mode as i32 }),
        }
    }

    fn mount(fs: &str) -> Option<AccessType> {
        Some(AccessType::Mount(MountVolume {
            fs_type: fs.into(),
            ..Default::default()
        }))
    }

    #[test]
    fn modes_and_filesystems() {
        let block = Some(AccessType::Block(BlockVolume {}));
        assert_eq!(
            check(&cap(Mode::SingleNodeWriter, block.clone()), "c").unwrap(),
            Usage::Block
        );
        assert_eq!(
            check(&cap(Mode::SingleNodeMultiWriter, mount("")), "c").unwrap(),
            Usage::Filesystem("xfs".into())
        );
        let e = check(&cap(Mode::MultiNodeMultiWriter, mount("ext4")), "caps[0]").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().contains("caps[0].access_mode"),
            "{}",
            e.message()
        );
        let e = check(&cap(Mode::SingleNodeWriter, mount("btrfs")), "c").unwrap_err();
        assert!(e.message().contains("c.mount.fs_type"), "{}", e.message());
        let e = check(&cap(Mode::SingleNodeWriter, None), "c").unwrap_err();
        assert!(e.message().contains("c.access_type"), "{}", e.message());
        assert!(check_all(&[], "volume_capabilities").is_err());
        assert_eq!(
            check_all(
                &[
                    cap(Mode::SingleNodeWriter, block),
                    cap(Mode::SingleNodeWriter, mount("xfs"))
                ],
                "v"
            )
            .unwrap(),
            Usage::Filesystem("xfs".into()),
            "the largest minimum wins"
        );
    }

    #[test]
    fn sizes() {
        let xfs = Usage::Filesystem("xfs".into());
        let ext4 = Usage::Filesystem("ext4".into());
        let range = |r: i64, l: i64| CapacityRange {
            required_bytes: r,
            limit_bytes: l,
        };
        assert_eq!(size_for(None, &xfs).unwrap(), GIB, "default 1Gi");
        assert_eq!(size_for(Some(&range(0, 0)), &Usage::Block).unwrap(), GIB);
        assert_eq!(size_for(Some(&range(1, 0)), &xfs).unwrap(), 300 * MIB);
        // Encrypted: the smallest filesystem still fits inside the LUKS2 header.
        assert_eq!(
            encrypted_size(300 * MIB, Some(&range(1, 0)), &xfs).unwrap(),
            316 * MIB
        );
        assert_eq!(
            encrypted_size(GIB, Some(&range(GIB as i64, 0)), &xfs).unwrap(),
            GIB
        );
        assert_eq!(
            encrypted_size(300 * MIB, Some(&range(1, 300 * MIB as i64)), &xfs)
                .unwrap_err()
                .code(),
            tonic::Code::OutOfRange
        );
        assert_eq!(size_for(Some(&range(1, 0)), &ext4).unwrap(), 32 * MIB);
        assert_eq!(
            size_for(Some(&range(1, 0)), &Usage::Block).unwrap(),
            8 * MIB
        );
        assert_eq!(
            size_for(Some(&range(GIB as i64 + 1, 0)), &xfs).unwrap(),
            GIB + ROUNDING,
            "rounded up to whole extents"
        );
        assert_eq!(
            size_for(Some(&range(0, 512 * MIB as i64)), &xfs).unwrap(),
            512 * MIB,
            "a limit below the default caps it"
        );
        let e = size_for(Some(&range(0, 100 * MIB as i64)), &xfs).unwrap_err();
        assert_eq!(e.code(), tonic::Code::OutOfRange, "xfs needs 300Mi");
        let e = size_for(Some(&range(2, 1)), &xfs).unwrap_err();
        assert_eq!(e.code(), tonic::Code::OutOfRange);
        let e = size_for(Some(&range(-1, 0)), &xfs).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let e = size_for(Some(&range(GIB as i64 + 1, GIB as i64 + 2)), &xfs).unwrap_err();
        assert_eq!(
            e.code(),
            tonic::Code::OutOfRange,
            "rounding cannot pass the limit"
        );
    }
}
