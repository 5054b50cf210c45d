//! Filesystem helpers: detect a signature, make xfs/ext4, grow, and read usage.

use crate::error::Error;
use crate::runner::Runner;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filesystem {
    Xfs,
    Ext4,
}

impl Filesystem {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "xfs" => Some(Self::Xfs),
            "ext4" => Some(Self::Ext4),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Xfs => "xfs",
            Self::Ext4 => "ext4",
        }
    }
}

/// The signature type on `device` (`xfs`, `ext4`, `LVM2_member`, ...), or `None` when blank.
pub fn signature(runner: &dyn Runner, device: &str) -> Result<Option<String>, Error> {
    // -p: low-level probe of the device itself, not the (possibly stale) cache.
    match runner.run(
        "blkid",
        &[
            "-p".into(),
            "-o".into(),
            "value".into(),
            "-s".into(),
            "TYPE".into(),
            device.into(),
        ],
    ) {
        Ok(o) => Ok(Some(o.stdout.trim().to_string()).filter(|s| !s.is_empty())),
        // blkid exits 2 when it finds nothing.
        Err(Error::Command { code: Some(2), .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn mkfs(runner: &dyn Runner, fs: Filesystem, device: &str) -> Result<(), Error> {
    mkfs_with_options(runner, fs, device, &[])
}

/// mkfs with a StorageClass's extra options, already checked by
/// [`crate::fs_options::mkfs_options`] (argv words: no shell). The command line is
/// [`crate::fs_options::mkfs_argv`]'s: our options (quiet, no discard), then these.
pub fn mkfs_with_options(
    runner: &dyn Runner,
    fs: Filesystem,
    device: &str,
    extra: &[String],
) -> Result<(), Error> {
    let (prog, args) = crate::fs_options::mkfs_argv(fs, device, extra);
    runner.run(prog, &args).map(drop)
}

/// Grows the filesystem to its device: xfs by mount point (it must be mounted), ext4 by device.
pub fn grow(
    runner: &dyn Runner,
    fs: Filesystem,
    device: &str,
    mount_point: &str,
) -> Result<(), Error> {
    match fs {
        Filesystem::Xfs => runner.run("xfs_growfs", &[mount_point.into()]).map(drop),
        Filesystem::Ext4 => runner.run("resize2fs", &[device.into()]).map(drop),
    }
}

/// Bytes and inodes of a mounted filesystem.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub total_inodes: u64,
    pub free_inodes: u64,
    pub used_inodes: u64,
}

/// Usage of the filesystem mounted at `path`, from `df` (no libc binding needed).
pub fn usage(runner: &dyn Runner, path: &str) -> Result<Usage, Error> {
    let o = runner.run(
        "df",
        &[
            "--block-size=1".into(),
            "--output=size,avail,used,itotal,iavail,iused".into(),
            path.into(),
        ],
    )?;
    parse_df(&o.stdout)
}

pub fn parse_df(out: &str) -> Result<Usage, Error> {
    let bad = || Error::Parse {
        what: "df".into(),
        message: format!("unexpected output {out:?}"),
    };
    let line = out.lines().nth(1).ok_or_else(bad)?;
    let n: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse::<u64>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    if n.len() != 6 {
        return Err(bad());
    }
    Ok(Usage {
        total_bytes: n[0],
        available_bytes: n[1],
        used_bytes: n[2],
        total_inodes: n[3],
        free_inodes: n[4],
        used_inodes: n[5],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn df_output() {
        let u = parse_df("     1B-blocks      Avail       Used  Inodes  IFree IUsed\n 1063256064 1020968960   42287104  524288 524285     3\n").unwrap();
        assert_eq!(
            (
                u.total_bytes,
                u.available_bytes,
                u.used_bytes,
                u.total_inodes,
                u.free_inodes,
                u.used_inodes
            ),
            (1063256064, 1020968960, 42287104, 524288, 524285, 3)
        );
        assert!(parse_df("garbage").is_err());
        assert!(parse_df("h\n1 2 x 4 5 6\n").is_err());
    }
}
