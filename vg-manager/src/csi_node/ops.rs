//! What each node RPC does on the node, once its arguments are checked and its LV found. These
//! block (commands, system calls): the service runs them in `spawn_blocking`.

use csi::pb::{self, VolumeCondition, VolumeUsage, volume_usage};
use csi::volume::Usage;
use lvm::fs::Filesystem;
use lvm::mount::{self, MountInfo};
use lvm::{LogicalVolume, Lvm, Report, Runner};
use std::path::Path;

use tonic::Status;
use tracing::{info, warn};

use super::host::{Host, Kind};
use super::record::Step;

/// Mounts stacked on one target that unpublish will take off before giving up.
const MAX_STACKED: usize = 16;

pub struct Publish {
    pub lv: LogicalVolume,
    pub target: String,
    pub usage: Usage,
    pub flags: Vec<String>,
    /// Extra mkfs words from the volume context (the StorageClass's
    /// `lvms.topolvm.io/mkfs-options`), already checked against the allow-list.
    pub mkfs_options: Vec<String>,
    pub readonly: bool,
    /// The key of a LUKS2 volume (the volume context asks for encryption); `None` for a plain
    /// one.
    pub encryption: Option<lvm::crypt::Key>,
}

/// The device a volume is used through (the LV's node, or its decrypted mapping), its
/// major:minor and its size in bytes.
struct Device {
    path: String,
    rdev: (u32, u32),
    size: u64,
}

fn internal(what: String, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("{what}: {e}"))
}

/// A failed publish. `step` is set when mkfs or mount refused: those failures are also told to
/// the LogicalVolume and the claim, since they come from the volume's options or its data; the
/// rest (bad targets, concurrent mounts) are kubelet's business and stay in its events.
#[derive(Debug)]
pub struct Failed {
    pub status: Status,
    pub step: Option<Step>,
}

impl From<Status> for Failed {
    fn from(status: Status) -> Self {
        Self { status, step: None }
    }
}

/// Marks a failure as one of `step`.
fn at(step: Step) -> impl FnOnce(Status) -> Failed {
    move |status| Failed {
        status,
        step: Some(step),
    }
}

/// `/dev/<vg>/<lv>`, activating the LV when its node is missing (a node rebooted with the VG
/// not auto-activated, or a snapshot made elsewhere). Returns whether it activated.
fn device(host: &Host, lv: &LogicalVolume, activate: bool) -> Result<(Device, bool), Status> {
    let path = format!("/dev/{}/{}", lv.vg_name, lv.name);
    let mut activated = false;
    let st = match host.stat(&path)? {
        Some(s) => s,
        None if activate => {
            info!(volume = %lv.name, vg = %lv.vg_name, "activating the logical volume: no device node");
            Lvm::new(host.runner.clone())
                .activate(&lv.vg_name, &lv.name)
                .map_err(|e| {
                    if e.is_not_found() {
                        Status::not_found(format!("activating {}: {e}", lv.full_name()))
                    } else {
                        internal(format!("activating {}", lv.full_name()), e)
                    }
                })?;
            activated = true;
            host.stat(&path)?.ok_or_else(|| {
                Status::internal(format!(
                    "{path} is missing after activating {}",
                    lv.full_name()
                ))
            })?
        }
        None => {
            return Err(Status::failed_precondition(format!(
                "{path} does not exist: logical volume {} is not active",
                lv.full_name()
            )));
        }
    };
    if st.kind != Kind::Block {
        return Err(Status::internal(format!("{path} is not a block device")));
    }
    Ok((
        Device {
            path,
            rdev: st.rdev,
            size: lv.size,
        },
        activated,
    ))
}

/// The answer for a target that is already mounted: success when it is this volume, mounted
/// the way asked; ALREADY_EXISTS (the CSI code for an incompatible publish) otherwise.
fn already(same: bool, mounted_ro: bool, want_ro: bool, p: &Publish) -> Result<(), Status> {
    let t = &p.target;
    if !same {
        return Err(Status::already_exists(format!(
            "target_path {t} is already mounted from another device than volume {}",
            p.lv.name
        )));
    }
    if mounted_ro != want_ro {
        let how = |ro| if ro { "read-only" } else { "read-write" };
        return Err(Status::already_exists(format!(
            "target_path {t} already publishes volume {} {}, not {} as asked",
            p.lv.name,
            how(mounted_ro),
            how(want_ro)
        )));
    }
    Ok(())
}

/// Publishes; returns whether the LV had to be activated.
pub fn publish(host: &Host, p: &Publish) -> Result<bool, Failed> {
    let (dev, activated) = device(host, &p.lv, true)?;
    let dev = match &p.encryption {
        Some(key) => unlock(host, &p.lv, &dev, key)?,
        None => dev,
    };
    // `ro` among the mount flags asks for read-only as much as the readonly field does.
    let want_ro = p.readonly || p.flags.iter().any(|f| f == "ro");
    match &p.usage {
        Usage::Block => publish_block(host, p, &dev, want_ro)?,
        Usage::Filesystem(fs) => publish_filesystem(host, p, &dev, fs, want_ro)?,
    }
    Ok(activated)
}

fn publish_block(host: &Host, p: &Publish, dev: &Device, want_ro: bool) -> Result<(), Failed> {
    let t = &p.target;
    match host.stat(t)? {
        None => host.create_file(t)?,
        Some(s) if s.kind == Kind::Dir => {
            return Err(Status::failed_precondition(format!(
                "target_path {t} is a directory: a block volume is published onto a file"
            ))
            .into());
        }
        Some(s) => {
            let mounts = host.mounts()?;
            if let Some(m) = mount::top(&mounts, &s.real) {
                // A bound device node: the node's own numbers say which device it is.
                let same = s.kind == Kind::Block && s.rdev == dev.rdev;
                return Ok(already(same, m.read_only(), want_ro, p)?);
            }
            if s.kind != Kind::File {
                return Err(Status::failed_precondition(format!(
                    "target_path {t} exists and is not a regular file"
                ))
                .into());
            }
        }
    }
    let r = host.runner.as_ref();
    mount::bind(r, &dev.path, t)
        .map_err(|e| internal(format!("binding {} to {t}", dev.path), e))
        .map_err(at(Step::Mount))?;
    if want_ro && let Err(e) = mount::remount_read_only(r, t) {
        // Never leave it writable: a retry would find it mounted and call that success.
        let _ = mount::umount(r, t);
        return Err(at(Step::Mount)(internal(
            format!("making {t} read-only"),
            e,
        )));
    }
    info!(volume = %p.lv.name, target = %t, readonly = want_ro, "published the block device");
    Ok(())
}

fn publish_filesystem(
    host: &Host,
    p: &Publish,
    dev: &Device,
    requested: &str,
    want_ro: bool,
) -> Result<(), Failed> {
    let t = &p.target;
    let id = &p.lv.name;
    let mounts = host.mounts()?;
    let exists = host.stat(t)?;
    match &exists {
        None => {}
        Some(s) if s.kind != Kind::Dir => {
            return Err(Status::failed_precondition(format!(
                "target_path {t} exists and is not a directory"
            ))
            .into());
        }
        Some(s) => {
            if let Some(m) = mount::top(&mounts, &s.real) {
                return Ok(already(
                    (m.major, m.minor) == dev.rdev,
                    m.read_only(),
                    want_ro,
                    p,
                )?);
            }
        }
    }
    // Mounted elsewhere on this node already (another pod of a multi-writer volume): the new
    // mount shares that filesystem, so it must ask for the same read-only state of it.
    let elsewhere = mounts.iter().find(|m| (m.major, m.minor) == dev.rdev);
    let sb_ro = elsewhere.map(|m| m.super_options.iter().any(|o| o == "ro"));
    if sb_ro == Some(true) && !want_ro {
        return Err(Status::failed_precondition(format!(
            "volume {id} is mounted read-only at {} on this node; it cannot also be published writable",
            elsewhere.map_or("", |m| m.mount_point.as_str())
        ))
        .into());
    }
    if exists.is_none() {
        host.mkdir_all(t)?;
    }
    let r = host.runner.as_ref();
    let requested_fs = Filesystem::parse(requested).ok_or_else(|| {
        Status::invalid_argument(format!("volume_capability.mount.fs_type {requested:?}"))
    })?;
    let mut made = false;
    let fs = match lvm::fs::signature(r, &dev.path)
        .map_err(|e| internal(format!("probing {}", dev.path), e))?
    {
        None => {
            info!(volume = %id, fs = requested, "making a filesystem on first use");
            lvm::fs::mkfs_with_options(r, requested_fs, &dev.path, &p.mkfs_options).map_err(
                |e| {
                    // The error reaches the pod's events (kubelet's FailedMount): name the
                    // class's options, the likely cause when mkfs refuses a value.
                    let with = if p.mkfs_options.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " with the StorageClass's {} {:?}",
                            csi::MKFS_OPTIONS_KEY,
                            p.mkfs_options.join(" ")
                        )
                    };
                    at(Step::Mkfs)(internal(
                        format!("making {requested} on {}{with}", dev.path),
                        e,
                    ))
                },
            )?;
            made = true;
            requested_fs
        }
        Some(found) if found == requested => requested_fs,
        Some(found) => match Filesystem::parse(&found) {
            // The data wins over the request: a StorageClass's fstype changed after the volume
            // was formatted, or a clone of a volume of the other kind.
            Some(other) => {
                warn!(volume = %id, found = %found, requested, "the volume holds another filesystem than requested: mounting what is there");
                other
            }
            None if found == LUKS_SIGNATURE => {
                return Err(Status::failed_precondition(format!(
                    "volume {id}: {} holds a LUKS header: it is encrypted (or a snapshot or clone of an encrypted volume) and its StorageClass does not say {}: {}",
                    dev.path,
                    csi::encryption::ENCRYPTION_KEY,
                    csi::encryption::LUKS2
                ))
                .into());
            }
            None => {
                return Err(Status::failed_precondition(format!(
                    "volume {id}: {} holds {found:?}, not a filesystem this driver mounts (xfs or ext4)",
                    dev.path
                ))
                .into());
            }
        },
    };
    let mut options: Vec<String> = p
        .flags
        .iter()
        .filter(|f| !matches!(f.as_str(), "ro" | "rw"))
        .cloned()
        .collect();
    // Read-only by the filesystem when it is mounted nowhere else; when it is mounted writable
    // elsewhere, by the mount point alone (below), since it must match the existing state.
    let bind_ro = want_ro && sb_ro == Some(false);
    if want_ro && !bind_ro {
        options.push("ro".into());
    }
    if fs == Filesystem::Xfs && !options.iter().any(|o| o == "nouuid") {
        // A snapshot or clone has its origin's UUID and must mount beside it.
        options.push("nouuid".into());
    }
    mount::mount(r, &dev.path, t, Some(fs.as_str()), &options).map_err(|e| {
        at(Step::Mount)(internal(
            format!(
                "mounting {} on {t} with options {:?}",
                dev.path,
                options.join(",")
            ),
            e,
        ))
    })?;
    if bind_ro && let Err(e) = mount::remount_read_only(r, t) {
        let _ = mount::umount(r, t);
        return Err(at(Step::Mount)(internal(
            format!("making {t} read-only"),
            e,
        )));
    }
    info!(volume = %id, target = %t, fs = fs.as_str(), readonly = want_ro, "published the filesystem");
    // The LV may have grown while nothing had it mounted; growing needs a writable mount, and
    // a filesystem also mounted elsewhere was checked when that mount was made.
    if !made && !want_ro && elsewhere.is_none() {
        match fs_size(r, fs, &dev.path, t) {
            Ok(size) if size < dev.size => {
                info!(volume = %id, from = size, to = dev.size, "growing the filesystem to its volume");
                if let Err(e) = lvm::fs::grow(r, fs, &dev.path, t) {
                    // Still usable at its old size; NodeExpandVolume grows it when asked.
                    warn!(volume = %id, error = %e, "could not grow the filesystem");
                }
            }
            Ok(_) => {}
            Err(e) => warn!(volume = %id, error = %e, "could not read the filesystem's size"),
        }
    }
    Ok(())
}

/// What blkid calls a LUKS (1 or 2) header.
const LUKS_SIGNATURE: &str = "crypto_LUKS";

/// The decrypted mapping of `lv` (whose device is `lv_dev`), opened with `key`: made on first
/// use (LUKS2 written only on a device with no signature at all, so no data is ever formatted
/// over), reused when another publish on this node opened it (the key is still checked: a
/// wrong key never reaches data through someone else's mapping), and grown when the LV grew
/// while it was open.
fn unlock(
    host: &Host,
    lv: &LogicalVolume,
    lv_dev: &Device,
    key: &lvm::crypt::Key,
) -> Result<Device, Failed> {
    use lvm::crypt;
    let r = host.runner.as_ref();
    let id = &lv.name;
    let refused = |what: &str, e: lvm::Error| {
        let status = if crypt::is_wrong_key(&e) {
            Status::permission_denied(format!(
                "volume {id}: the key in the node-publish Secret does not open its LUKS2 header; the data is untouched"
            ))
        } else {
            internal(format!("{what} {}", lv_dev.path), e)
        };
        at(Step::Mount)(status)
    };
    lvm::dm::crypt_available(r).map_err(|e| at(Step::Mount)(Status::failed_precondition(e)))?;
    let name = crypt::mapping_name(id);
    let mapped =
        crypt::status(r, &name).map_err(|e| internal(format!("reading mapping {name}"), e))?;
    match mapped {
        Some(m) => {
            // Another publish opened it, or a crash came between open and mount.
            let backing = host.stat(&m.device)?;
            if backing.as_ref().map(|s| s.rdev) != Some(lv_dev.rdev) {
                return Err(Status::internal(format!(
                    "mapping {name} decrypts {}, not volume {id}'s {}",
                    m.device, lv_dev.path
                ))
                .into());
            }
            crypt::test_key(r, &lv_dev.path, key).map_err(|e| refused("testing the key of", e))?;
            if m.offset + m.size < lv.size {
                info!(volume = %id, "growing the decrypted mapping to its volume");
                crypt::resize(r, &name).map_err(|e| internal(format!("resizing {name}"), e))?;
            }
        }
        None => {
            if !crypt::is_luks2(r, &lv_dev.path)
                .map_err(|e| internal(format!("probing {}", lv_dev.path), e))?
            {
                match lvm::fs::signature(r, &lv_dev.path)
                    .map_err(|e| internal(format!("probing {}", lv_dev.path), e))?
                {
                    None => {
                        info!(volume = %id, "writing a LUKS2 header on first use");
                        crypt::format(r, &lv_dev.path, key).map_err(|e| {
                            at(Step::Mkfs)(internal(
                                format!("formatting LUKS2 on {}", lv_dev.path),
                                e,
                            ))
                        })?;
                    }
                    Some(found) => {
                        return Err(at(Step::Mount)(Status::failed_precondition(format!(
                            "volume {id} is to be encrypted, but {} already holds {found:?} (written without encryption, or a snapshot or clone of a plain volume): refusing to format over it",
                            lv_dev.path
                        ))));
                    }
                }
            }
            // Thin volumes pass discards down so freed blocks return to the pool.
            let discards = !lv.pool.is_empty();
            crypt::open(r, &lv_dev.path, &name, key, discards)
                .map_err(|e| refused("opening", e))?;
            info!(volume = %id, mapping = %name, "opened the LUKS2 volume");
        }
    }
    mapping_device(host, &name)?.ok_or_else(|| {
        Status::internal(format!(
            "{} is missing after opening it",
            crypt::mapper_path(&name)
        ))
        .into()
    })
}

/// The open decrypted mapping `name` as a device, or `None` when it is not open.
fn mapping_device(host: &Host, name: &str) -> Result<Option<Device>, Status> {
    let path = lvm::crypt::mapper_path(name);
    let Some(st) = host.stat(&path)? else {
        return Ok(None);
    };
    if st.kind != Kind::Block {
        return Err(Status::internal(format!("{path} is not a block device")));
    }
    let m = lvm::crypt::status(host.runner.as_ref(), name)
        .map_err(|e| internal(format!("reading mapping {name}"), e))?;
    Ok(m.map(|m| Device {
        path,
        rdev: st.rdev,
        size: m.size,
    }))
}

/// Closes volume `id`'s decrypted mapping when nothing on the node mounts it any more (the
/// last unpublish). Cheap for a plain volume: one stat of a path that does not exist.
pub fn lock(host: &Host, id: &str) -> Result<(), Status> {
    let name = lvm::crypt::mapping_name(id);
    let Some(st) = host.stat(&lvm::crypt::mapper_path(&name))? else {
        return Ok(());
    };
    if let Some(m) = host
        .mounts()?
        .iter()
        .find(|m| (m.major, m.minor) == st.rdev)
    {
        info!(volume = id, still = %m.mount_point, "keeping the decrypted mapping: still published");
        return Ok(());
    }
    lvm::crypt::close(host.runner.as_ref(), &name)
        .map_err(|e| internal(format!("closing mapping {name}"), e))?;
    info!(volume = id, mapping = %name, "closed the LUKS2 volume");
    Ok(())
}

/// Bytes the filesystem spans on its device, from its superblock.
fn fs_size(r: &dyn Runner, fs: Filesystem, device: &str, mount_point: &str) -> Result<u64, String> {
    let (out, size) = match fs {
        Filesystem::Xfs => {
            let o = r
                .run("xfs_info", &[mount_point.into()])
                .map_err(|e| e.to_string())?;
            let s = xfs_info_size(&o.stdout);
            (o.stdout, s)
        }
        Filesystem::Ext4 => {
            let o = r
                .run("dumpe2fs", &["-h".into(), device.into()])
                .map_err(|e| e.to_string())?;
            let s = dumpe2fs_size(&o.stdout);
            (o.stdout, s)
        }
    };
    size.ok_or_else(|| format!("unexpected output {out:?}"))
}

/// From xfs_info: the data section's `bsize=` times `blocks=`.
pub fn xfs_info_size(out: &str) -> Option<u64> {
    let line = out.lines().find(|l| l.starts_with("data"))?;
    let value = |key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    Some(value("bsize=")? * value("blocks=")?)
}

/// From `dumpe2fs -h`: `Block count` times `Block size`.
pub fn dumpe2fs_size(out: &str) -> Option<u64> {
    let value = |key: &str| -> Option<u64> {
        out.lines()
            .find_map(|l| l.strip_prefix(key))?
            .trim()
            .parse()
            .ok()
    };
    Some(value("Block count:")? * value("Block size:")?)
}

pub fn unpublish(host: &Host, target: &str) -> Result<(), Status> {
    let real = match host.stat(target) {
        Ok(None) => return Ok(()),
        Ok(Some(s)) => s.real,
        // A mount whose device went away can fail stat (EIO); unmount it by the name given.
        Err(e) => {
            warn!(target, error = %e, "cannot inspect the target; unmounting it anyway");
            target.to_string()
        }
    };
    let r = host.runner.as_ref();
    let mounted = |m: &[MountInfo]| mount::top(m, &real).is_some();
    for _ in 0..MAX_STACKED {
        if !mounted(&host.mounts()?) {
            break;
        }
        mount::umount(r, target).map_err(|e| internal(format!("unmounting {target}"), e))?;
        info!(target, "unmounted");
    }
    if mounted(&host.mounts()?) {
        return Err(Status::internal(format!(
            "{target} is still mounted after {MAX_STACKED} unmounts"
        )));
    }
    match host.stat(target)? {
        None => Ok(()),
        Some(s) => host.remove(target, s.kind),
    }
}

/// Grows the filesystem at `path` to its device. A block volume (or a path with no filesystem
/// mounted) has nothing to grow: its size is the LV's.
pub fn expand(host: &Host, lv: &LogicalVolume, path: &str, block: bool) -> Result<(), Status> {
    let st = host
        .stat(path)?
        .ok_or_else(|| Status::not_found(format!("volume_path {path} does not exist")))?;
    // An open decrypted mapping keeps its size until told: grow it first, for a block volume
    // and a filesystem alike. (A closed one takes the LV's new size when it is next opened.)
    let name = lvm::crypt::mapping_name(&lv.name);
    let mapped = mapping_device(host, &name)?;
    if let Some(m) = &mapped {
        lvm::crypt::resize(host.runner.as_ref(), &name)
            .map_err(|e| internal(format!("resizing mapping {name}"), e))?;
        info!(volume = %lv.name, mapping = %name, from = m.size, "grew the decrypted mapping");
    }
    if block || st.kind == Kind::Block {
        return Ok(());
    }
    let mounts = host.mounts()?;
    let Some(m) = mount::top(&mounts, &st.real) else {
        return Ok(());
    };
    let dev = match mapped {
        Some(d) => d,
        None => device(host, lv, false)?.0,
    };
    if (m.major, m.minor) != dev.rdev {
        return Err(Status::failed_precondition(format!(
            "volume_path {path} is mounted from another device than volume {}",
            lv.name
        )));
    }
    let fs = Filesystem::parse(&m.fs_type).ok_or_else(|| {
        Status::failed_precondition(format!(
            "volume_path {path} holds {}, which this driver cannot grow",
            m.fs_type
        ))
    })?;
    lvm::fs::grow(host.runner.as_ref(), fs, &dev.path, &st.real)
        .map_err(|e| internal(format!("growing {} at {path}", fs.as_str()), e))?;
    info!(volume = %lv.name, path, fs = fs.as_str(), "grew the filesystem");
    Ok(())
}

/// Usage and condition of volume `lv` published at `path`. A path with nothing mounted, a full
/// or failed pool and a filesystem gone read-only are abnormal conditions, not errors: kubelet
/// turns them into events on the pod.
pub fn stats(
    host: &Host,
    path: &str,
    report: &Report,
    lv: &LogicalVolume,
) -> Result<pb::NodeGetVolumeStatsResponse, Status> {
    let st = host
        .stat(path)?
        .ok_or_else(|| Status::not_found(format!("volume_path {path} does not exist")))?;
    let abnormal = |message: String| pb::NodeGetVolumeStatsResponse {
        usage: vec![],
        volume_condition: Some(VolumeCondition {
            abnormal: true,
            message,
        }),
    };
    let usage = |unit: volume_usage::Unit, total: u64, available: u64, used: u64| VolumeUsage {
        available: available as i64,
        total: total as i64,
        used: used as i64,
        unit: unit as i32,
    };
    let mut read_only = None;
    let usage = match st.kind {
        Kind::Block => vec![usage(volume_usage::Unit::Bytes, lv.size, 0, 0)],
        Kind::Dir => {
            let mounts = host.mounts()?;
            let Some(m) = mount::top(&mounts, &st.real) else {
                return Ok(abnormal(format!(
                    "volume_path {path} has no filesystem mounted"
                )));
            };
            read_only = read_only_problem(&lv.name, m, Path::new("/sys"));
            let u = host.usage(path)?;
            vec![
                usage(
                    volume_usage::Unit::Bytes,
                    u.total_bytes,
                    u.available_bytes,
                    u.used_bytes,
                ),
                usage(
                    volume_usage::Unit::Inodes,
                    u.total_inodes,
                    u.free_inodes,
                    u.used_inodes,
                ),
            ]
        }
        _ => {
            return Err(Status::failed_precondition(format!(
                "volume_path {path} is neither a directory nor a block device"
            )));
        }
    };
    let problems: Vec<String> = condition(report, lv).into_iter().chain(read_only).collect();
    let problem = (!problems.is_empty()).then(|| problems.join("; "));
    Ok(pb::NodeGetVolumeStatsResponse {
        usage,
        volume_condition: Some(VolumeCondition {
            abnormal: problem.is_some(),
            message: problem.unwrap_or_default(),
        }),
    })
}

/// What is wrong with the volume or its thin pool, from the LVM report: a full pool makes
/// writes fail (or hang, with the pool's default queueing), which users otherwise see only as
/// I/O errors in their pods. `None` when healthy.
pub fn condition(report: &Report, lv: &LogicalVolume) -> Option<String> {
    // The 9th attribute character is the volume's health.
    let health = |l: &LogicalVolume| l.attr.chars().nth(8).unwrap_or('-');
    let mut problems = vec![];
    if health(lv) == 'p' {
        problems.push(format!(
            "logical volume {} is partial: a physical volume is missing",
            lv.full_name()
        ));
    }
    if !lv.pool.is_empty()
        && let Some(pool) = report.lv(&lv.vg_name, &lv.pool)
    {
        let name = pool.full_name();
        if let Some(d) = pool.data_percent.filter(|d| *d >= 100.0) {
            problems.push(format!(
                "thin pool {name} is out of data space ({d:.2}% used): writes fail"
            ));
        }
        if let Some(m) = pool.metadata_percent.filter(|m| *m >= 100.0) {
            problems.push(format!(
                "thin pool {name} is out of metadata space ({m:.2}% used): writes fail"
            ));
        }
        match health(pool) {
            'F' => problems.push(format!("thin pool {name} has failed")),
            'D' if problems.is_empty() => {
                problems.push(format!("thin pool {name} is out of data space"))
            }
            'M' => problems.push(format!("thin pool {name} has read-only metadata")),
            _ => {}
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// Why the filesystem of `volume`, mounted writable at `m`, no longer takes writes; None when
/// it does (or the mount is read-only on purpose: a volume published read-only is `ro` in its
/// mount point's options, or in both those and the superblock's when mounted `-o ro`; publish
/// refuses a writable mount of a filesystem already read-only elsewhere). Two signs, read from
/// files (no command, so the agent can check every volume on every pass):
///
/// - the superblock says `ro` under a `rw` mount point: how the kernel remounted a filesystem
///   read-only after an error until 6.x, and how other filesystems still do;
/// - ext4 mounted `errors=remount-ro` has counted errors (`/sys/fs/ext4/<dev>/errors_count`):
///   newer kernels (Debian's 6.1.0-57 among them) stop its writes with EROFS at the first error
///   without touching the mount table. The count is the superblock's, kept until e2fsck
///   repairs the filesystem, so an unrepaired filesystem mounted again stays abnormal too.
///
/// `sys` is where sysfs is mounted (`/sys`; a directory of fakes in tests).
pub fn read_only_problem(volume: &str, m: &MountInfo, sys: &Path) -> Option<String> {
    if m.read_only() {
        return None;
    }
    let at = &m.mount_point;
    if m.super_options.iter().any(|o| o == "ro") {
        return Some(format!(
            "the filesystem of volume {volume} went read-only at {at} (published read-write; the \
             kernel remounted it read-only after an error, see the node's kernel log): writes fail"
        ));
    }
    if m.fs_type != "ext4" || !m.super_options.iter().any(|o| o == "errors=remount-ro") {
        return None;
    }
    // /sys/dev/block/MAJ:MIN links to the device, whose name ext4 files its counters under.
    let dev = std::fs::read_link(sys.join(format!("dev/block/{}:{}", m.major, m.minor))).ok()?;
    let dir = sys.join("fs/ext4").join(dev.file_name()?);
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .ok()
            .map(|v| v.trim().to_string())
    };
    let errors: u64 = read("errors_count")?.parse().ok()?;
    if errors == 0 {
        return None;
    }
    let last = read("last_error_func")
        .filter(|f| !f.is_empty())
        .map(|f| format!(", the last in {f}"))
        .unwrap_or_default();
    Some(format!(
        "the filesystem of volume {volume} went read-only at {at}: ext4 recorded {errors} error(s){last} \
         and, mounted errors=remount-ro, takes no more writes until it is unmounted and repaired \
         (e2fsck); see the node's kernel log"
    ))
}
