//! Filesystem options both halves of the driver check (the rules are `lvm::fs_options`): the
//! controller at CreateVolume, so a StorageClass with a bad option fails before any volume
//! exists, with an error naming the parameter and the option; the node at NodePublishVolume,
//! before mkfs or mount run, since a PersistentVolume's attributes and mount options can be
//! edited after provisioning.
//!
//! The mkfs options travel as TopoLVM passes what the node needs: in the volume context
//! CreateVolume returns, which the provisioner stores in the PV
//! (`spec.csi.volumeAttributes`) and kubelet hands to every NodePublishVolume.

use std::collections::HashMap;

use lvm::fs::Filesystem;
use lvm::fs_options::{check_mount_options, mkfs_options};
use tonic::Status;

use crate::MKFS_OPTIONS_KEY;
use crate::pb::VolumeCapability;
use crate::pb::volume_capability::AccessType;
use crate::volume::Usage;

/// The extra mkfs words in `map` (StorageClass parameters or a volume context) for `fs`;
/// empty when there are none. `field` names the map in errors.
pub fn mkfs_words(
    map: &HashMap<String, String>,
    fs: Filesystem,
    field: &str,
) -> Result<Vec<String>, Status> {
    let Some(text) = map.get(MKFS_OPTIONS_KEY) else {
        return Ok(vec![]);
    };
    mkfs_options(fs, text).map_err(|e| {
        Status::invalid_argument(format!(
            "{field}[{MKFS_OPTIONS_KEY}]: mkfs.{} option {e}",
            fs.as_str()
        ))
    })
}

/// Checks the mount flags of a mount capability (the StorageClass's or PV's `mountOptions`)
/// for `fs`. `field` names the capability.
pub fn check_mount_flags(flags: &[String], fs: Filesystem, field: &str) -> Result<(), Status> {
    check_mount_options(fs, flags).map_err(|e| {
        Status::invalid_argument(format!(
            "{field}.mount.mount_flags (mountOptions): {} mount option {e}",
            fs.as_str()
        ))
    })
}

/// CreateVolume's checks and the volume context it returns: for a filesystem volume, the mount
/// flags of every capability and the mkfs options of the StorageClass, which the context
/// carries (normalized to single spaces) to the node. A block volume is never formatted, so a
/// class shared by block and filesystem claims keeps working for both.
pub fn volume_context(
    params: &HashMap<String, String>,
    caps: &[VolumeCapability],
    usage: &Usage,
) -> Result<HashMap<String, String>, Status> {
    let Usage::Filesystem(name) = usage else {
        return Ok(HashMap::new());
    };
    let fs = Filesystem::parse(name)
        .ok_or_else(|| Status::invalid_argument(format!("fs_type {name:?} is not supported")))?;
    for (i, c) in caps.iter().enumerate() {
        if let Some(AccessType::Mount(m)) = &c.access_type {
            check_mount_flags(&m.mount_flags, fs, &format!("volume_capabilities[{i}]"))?;
        }
    }
    let words = mkfs_words(params, fs, "parameters")?;
    Ok(if words.is_empty() {
        HashMap::new()
    } else {
        HashMap::from([(MKFS_OPTIONS_KEY.to_string(), words.join(" "))])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::volume_capability::{AccessMode, MountVolume, access_mode};
    use tonic::Code;

    fn cap(fs: &str, flags: &[&str]) -> VolumeCapability {
        VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume {
                fs_type: fs.into(),
                mount_flags: flags.iter().map(|f| f.to_string()).collect(),
                ..Default::default()
            })),
            access_mode: Some(AccessMode {
                mode: access_mode::Mode::SingleNodeWriter as i32,
            }),
        }
    }

    fn params(mkfs: &str) -> HashMap<String, String> {
        HashMap::from([(MKFS_OPTIONS_KEY.to_string(), mkfs.to_string())])
    }

    #[test]
    fn the_context_carries_checked_mkfs_options() {
        let xfs = Usage::Filesystem("xfs".into());
        let ctx = volume_context(
            &params("  -i size=512   -m reflink=1"),
            &[cap("xfs", &["noatime"])],
            &xfs,
        )
        .unwrap();
        assert_eq!(ctx[MKFS_OPTIONS_KEY], "-i size=512 -m reflink=1");
        assert!(
            volume_context(&HashMap::new(), &[cap("xfs", &[])], &xfs)
                .unwrap()
                .is_empty(),
            "no options, no context: what TopoLVM returns"
        );
        assert!(
            volume_context(&params("-i size=512"), &[], &Usage::Block)
                .unwrap()
                .is_empty(),
            "a block volume is not formatted"
        );
    }

    #[test]
    fn errors_name_the_parameter_and_the_option() {
        let xfs = Usage::Filesystem("xfs".into());
        let e = volume_context(&params("-i size=512 -f"), &[cap("xfs", &[])], &xfs).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message().starts_with(
                "parameters[lvms.topolvm.io/mkfs-options]: mkfs.xfs option \"-f\": not allowed for xfs"
            ),
            "{}",
            e.message()
        );
        let ext4 = Usage::Filesystem("ext4".into());
        let e = volume_context(&params("-i size=512"), &[cap("ext4", &[])], &ext4).unwrap_err();
        assert!(
            e.message().contains("mkfs.ext4 option \"-i size=512\""),
            "{}",
            e.message()
        );
        let e = volume_context(
            &HashMap::new(),
            &[cap("xfs", &["noatime"]), cap("xfs", &["exec"])],
            &xfs,
        )
        .unwrap_err();
        assert!(
            e.message().starts_with(
                "volume_capabilities[1].mount.mount_flags (mountOptions): xfs mount option \"exec\": widens privilege"
            ),
            "{}",
            e.message()
        );
    }
}
