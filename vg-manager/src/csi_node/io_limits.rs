//! A volume's I/O limits (csi::io_limits) in the pod's cgroup: cgroup v2 `io.max` of the pod's
//! cgroup, for the device the pod uses (the LV, or its decrypted mapping). A pod cgroup is
//! kubelet's (`kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice` with the
//! systemd driver, `kubepods/<qos>/pod<uid>` with cgroupfs); its containers are below it, so one
//! entry holds all of them. kubelet makes the pod's cgroup before it mounts the pod's volumes.
//!
//! What was written is remembered in a small file per publish (the CSI socket's directory is on
//! the host and outlives the agent), so unpublish takes exactly that entry away and expansion
//! rewrites a per-GiB limit for the new size. Files are written with the standard library; no
//! command runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use csi::io_limits::{IoLimits, io_max_line};
use serde::{Deserialize, Serialize};
use tonic::Status;
use tracing::info;

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The pod's UID in NodePublishVolume's volume context (the CSIDriver's podInfoOnMount).
pub const POD_UID_KEY: &str = "csi.storage.k8s.io/pod.uid";

/// One publish's limits, as written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub target: String,
    pub cgroup: PathBuf,
    pub device: (u32, u32),
    /// The volume context's limit entries (to resolve again at another size).
    pub limits: HashMap<String, String>,
}

/// The pod's UID: the volume context's, else the one in kubelet's target path
/// (`…/pods/<uid>/volumes/…` for a filesystem, `…/volumeDevices/publish/<pv>/<uid>` for a block
/// volume).
pub fn pod_uid(volume_context: &HashMap<String, String>, target: &str) -> Option<String> {
    if let Some(uid) = volume_context.get(POD_UID_KEY).filter(|u| !u.is_empty()) {
        return Some(uid.clone());
    }
    let parts: Vec<&str> = target.split('/').collect();
    if let Some(i) = parts.iter().position(|p| *p == "pods") {
        return parts.get(i + 1).map(|s| s.to_string());
    }
    if parts.contains(&"volumeDevices") {
        return parts
            .last()
            .filter(|s| !s.is_empty())
            .map(|s| s.to_string());
    }
    None
}

/// The pod's cgroup directory under `root`, by kubelet's names for either cgroup driver.
pub fn pod_cgroup(root: &Path, uid: &str) -> Result<PathBuf, Status> {
    if !root.join("cgroup.controllers").is_file() {
        return Err(Status::failed_precondition(format!(
            "per-volume I/O limits need cgroup v2, and {} is not a cgroup2 mount (cgroup v1 \
             nodes cannot hold a volume's io.max): remove the lvms.topolvm.io/*-bps and *-iops \
             parameters from the StorageClass, or move the node to cgroup v2",
            root.display()
        )));
    }
    let systemd = format!("-pod{}.slice", uid.replace('-', "_"));
    let cgroupfs = format!("pod{uid}");
    let mut level = vec![root.to_path_buf()];
    // kubepods / qos / pod, below an optional kubelet root (k3s, kind): four levels suffice.
    for _ in 0..4 {
        let mut next = Vec::new();
        for dir in &level {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(&systemd) || name == cgroupfs {
                    return Ok(e.path());
                }
                if name.starts_with("kube")
                    || name.starts_with("besteffort")
                    || name.starts_with("burstable")
                {
                    next.push(e.path());
                }
            }
        }
        level = next;
    }
    Err(Status::failed_precondition(format!(
        "no cgroup of pod {uid} under {}: kubelet makes it before it mounts the pod's volumes",
        root.display()
    )))
}

/// Writes `line` into the cgroup's `io.max`.
fn write_io_max(cgroup: &Path, line: &str) -> Result<(), Status> {
    let controllers =
        std::fs::read_to_string(cgroup.join("cgroup.controllers")).unwrap_or_default();
    if !controllers.split_whitespace().any(|c| c == "io") {
        return Err(Status::failed_precondition(format!(
            "the io controller is not enabled for {} (its cgroup.controllers: {:?}): enable it \
             in the parents' cgroup.subtree_control",
            cgroup.display(),
            controllers.trim()
        )));
    }
    std::fs::write(cgroup.join("io.max"), format!("{line}\n")).map_err(|e| {
        Status::internal(format!(
            "writing {line:?} to {}/io.max: {e}",
            cgroup.display()
        ))
    })
}

/// Where a publish's entry is kept: `<dir>/<volume>@<hash of the target>.json`.
fn entry_path(dir: &Path, volume: &str, target: &str) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    target.hash(&mut h);
    dir.join(format!("{volume}@{:016x}.json", h.finish()))
}

/// Sets the limits of `volume` (size `size`, device `device`) published at `target` for the pod,
/// and remembers them. Nothing to do for a volume without limits.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    root: &Path,
    state: &Path,
    volume: &str,
    target: &str,
    volume_context: &HashMap<String, String>,
    device: (u32, u32),
    size: u64,
) -> Result<(), Status> {
    let limits = IoLimits::from_map(volume_context, "volume_context")?;
    if limits.is_empty() {
        return Ok(());
    }
    let uid = pod_uid(volume_context, target).ok_or_else(|| {
        Status::invalid_argument(format!(
            "volume {volume} has I/O limits but NodePublishVolume named no pod \
             (volume_context[{POD_UID_KEY}]: the CSIDriver needs podInfoOnMount)"
        ))
    })?;
    let cgroup = pod_cgroup(root, &uid)?;
    let line = io_max_line(device, &limits.resolve(size));
    write_io_max(&cgroup, &line)?;
    info!(volume, pod = %uid, io_max = %line, "I/O limits set");
    let entry = Entry {
        target: target.into(),
        cgroup,
        device,
        limits: limits.volume_context(),
    };
    std::fs::create_dir_all(state)
        .and_then(|_| {
            std::fs::write(
                entry_path(state, volume, target),
                serde_json::to_vec(&entry).unwrap_or_default(),
            )
        })
        .map_err(|e| {
            Status::internal(format!(
                "recording the I/O limits in {}: {e}",
                state.display()
            ))
        })
}

/// The entries of `volume`.
fn entries(state: &Path, volume: &str) -> Vec<(PathBuf, Entry)> {
    let Ok(dir) = std::fs::read_dir(state) else {
        return Vec::new();
    };
    let prefix = format!("{volume}@");
    dir.flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|e| {
            let entry = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            Some((e.path(), entry))
        })
        .collect()
}

/// Takes the limits of the publish at `target` away (the pod's cgroup may already be gone:
/// then there is nothing to take away) and forgets them.
pub fn clear(state: &Path, volume: &str, target: &str) -> Result<(), Status> {
    let path = entry_path(state, volume, target);
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(());
    };
    if let Ok(entry) = serde_json::from_slice::<Entry>(&bytes)
        && entry.cgroup.is_dir()
    {
        write_io_max(&entry.cgroup, &io_max_line(entry.device, &[]))?;
        info!(volume, cgroup = %entry.cgroup.display(), "I/O limits removed");
    }
    std::fs::remove_file(&path)
        .map_err(|e| Status::internal(format!("removing {}: {e}", path.display())))
}

/// Rewrites the per-GiB limits of every publish of `volume` for its new `size`.
pub fn resize(state: &Path, volume: &str, size: u64) -> Result<(), Status> {
    for (_, entry) in entries(state, volume) {
        let limits = IoLimits::from_map(&entry.limits, "recorded limits")?;
        if limits.scales() && entry.cgroup.is_dir() {
            let line = io_max_line(entry.device, &limits.resolve(size));
            write_io_max(&entry.cgroup, &line)?;
            info!(volume, io_max = %line, "I/O limits follow the new size");
        }
    }
    Ok(())
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

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("io-limits-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_pod_comes_from_the_context_or_kubelets_paths() {
        let uid = "0b3f6c1e-8d2a-4f5e-9c7b-1a2b3c4d5e6f";
        assert_eq!(
            pod_uid(&map(&[(POD_UID_KEY, uid)]), "/x").as_deref(),
            Some(uid)
        );
        assert_eq!(
            pod_uid(
                &map(&[]),
                &format!("/var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~csi/pvc-1/mount")
            )
            .as_deref(),
            Some(uid)
        );
        assert_eq!(
            pod_uid(
                &map(&[]),
                &format!(
                    "/var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/publish/pvc-1/{uid}"
                )
            )
            .as_deref(),
            Some(uid)
        );
        assert_eq!(pod_uid(&map(&[]), "/mnt/somewhere"), None);
    }

    #[test]
    fn pod_cgroups_of_both_drivers_and_a_clear_reason_on_v1() {
        let uid = "0b3f6c1e-8d2a-4f5e";
        let root = temp("drivers");
        std::fs::write(root.join("cgroup.controllers"), "cpu io memory").unwrap();
        let systemd = root.join(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0b3f6c1e_8d2a_4f5e.slice",
        );
        std::fs::create_dir_all(&systemd).unwrap();
        assert_eq!(pod_cgroup(&root, uid).unwrap(), systemd);
        let root2 = temp("cgroupfs");
        std::fs::write(root2.join("cgroup.controllers"), "io").unwrap();
        let cgroupfs = root2.join("kubepods/besteffort/pod0b3f6c1e-8d2a-4f5e");
        std::fs::create_dir_all(&cgroupfs).unwrap();
        assert_eq!(pod_cgroup(&root2, uid).unwrap(), cgroupfs);
        assert!(
            pod_cgroup(&root2, "other")
                .unwrap_err()
                .message()
                .contains("no cgroup of pod other")
        );
        let v1 = temp("v1");
        std::fs::create_dir_all(v1.join("blkio")).unwrap();
        let e = pod_cgroup(&v1, uid).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(e.message().contains("need cgroup v2"), "{}", e.message());
    }

    #[test]
    fn apply_resize_and_clear_write_and_forget_the_entry() {
        let uid = "u1";
        let root = temp("apply");
        std::fs::write(root.join("cgroup.controllers"), "io").unwrap();
        let pod = root
            .join("kubepods/pod")
            .with_file_name(format!("pod{uid}"));
        std::fs::create_dir_all(&pod).unwrap();
        std::fs::write(pod.join("cgroup.controllers"), "cpu io").unwrap();
        let state = root.join("state");
        let ctx = map(&[
            (POD_UID_KEY, uid),
            ("lvms.topolvm.io/read-bps-per-gib", "1Mi"),
            ("lvms.topolvm.io/write-iops", "100"),
        ]);
        let gib = 1u64 << 30;
        apply(&root, &state, "v1", "/t", &ctx, (253, 4), 2 * gib).unwrap();
        let io_max = || std::fs::read_to_string(pod.join("io.max")).unwrap();
        assert_eq!(
            io_max(),
            "253:4 rbps=2097152 wbps=max riops=max wiops=100\n"
        );
        resize(&state, "v1", 5 * gib).unwrap();
        assert_eq!(
            io_max(),
            "253:4 rbps=5242880 wbps=max riops=max wiops=100\n"
        );
        clear(&state, "v1", "/t").unwrap();
        assert_eq!(io_max(), "253:4 rbps=max wbps=max riops=max wiops=max\n");
        assert!(entries(&state, "v1").is_empty(), "nothing left behind");
        clear(&state, "v1", "/t").unwrap();
        // No limits: nothing written, no pod needed.
        apply(&root, &state, "v2", "/t2", &map(&[]), (253, 5), gib).unwrap();
        assert!(entries(&state, "v2").is_empty());
        // Limits without a pod to hold them.
        let e = apply(
            &root,
            &state,
            "v3",
            "/t3",
            &map(&[("lvms.topolvm.io/read-iops", "5")]),
            (1, 1),
            gib,
        )
        .unwrap_err();
        assert!(e.message().contains("podInfoOnMount"), "{}", e.message());
    }
}
