use super::*;
use lvms_api::{DeviceFilesystemType, DeviceSelector, RawDevicesConfig};

fn disk(name: &str, fstype: &str) -> BlockDevice {
    BlockDevice {
        name: name.into(),
        kname: name.trim_start_matches("/dev/").into(),
        kind: "disk".into(),
        size: 256 << 20,
        fstype: fstype.into(),
        ..Default::default()
    }
}

fn spec(mode: RawVolumeMode, paths: Option<Vec<&str>>) -> LVMVolumeGroupSpec {
    LVMVolumeGroupSpec {
        device_selector: paths.map(|p| DeviceSelector {
            paths: Some(p.into_iter().map(String::from).collect()),
            ..Default::default()
        }),
        raw_devices: Some(RawDevicesConfig {
            volume_mode: mode,
            cleanup: RawCleanup::Zero,
        }),
        fstype: Some(DeviceFilesystemType::Xfs),
        ..Default::default()
    }
}

/// Stable paths `/dev/disk/by-path/pci-<name>` for every disk but `/dev/nostable`.
fn stable(devices: &[BlockDevice]) -> BTreeMap<String, String> {
    devices
        .iter()
        .filter(|d| d.name != "/dev/nostable")
        .map(|d| {
            let k = d.name.trim_start_matches("/dev/");
            (
                d.name.clone(),
                format!("/dev/disk/by-path/pci-0000:00:{k}.0"),
            )
        })
        .collect()
}

struct Case {
    spec: LVMVolumeGroupSpec,
    devices: Vec<BlockDevice>,
    pvs: Vec<PvView>,
    others: BTreeMap<String, String>,
    pending: BTreeSet<String>,
}

impl Case {
    fn new(spec: LVMVolumeGroupSpec, devices: Vec<BlockDevice>) -> Self {
        Self {
            spec,
            devices,
            pvs: vec![],
            others: BTreeMap::new(),
            pending: BTreeSet::new(),
        }
    }

    fn run(&self) -> RawPlan {
        let stable = stable(&self.devices);
        let by_link: BTreeMap<String, String> =
            stable.iter().map(|(d, l)| (l.clone(), d.clone())).collect();
        let names: BTreeSet<String> = self.devices.iter().map(|d| d.name.clone()).collect();
        let resolve = move |p: &str| {
            by_link
                .get(p)
                .cloned()
                .or_else(|| names.contains(p).then(|| p.to_string()))
        };
        plan(&Inputs {
            node: "worker-1",
            class: "disks",
            spec: &self.spec,
            devices: &self.devices,
            stable: &stable,
            pvs: &self.pvs,
            others: &self.others,
            pending: &self.pending,
            resolve: &resolve,
            loops: &BTreeMap::new(),
            container_mounts: false,
        })
    }
}

fn pv(name: &str, dev: &str, phase: &str) -> PvView {
    PvView {
        name: name.into(),
        path: format!("/dev/disk/by-path/pci-0000:00:{dev}.0"),
        phase: phase.into(),
        deleting: false,
        claimed: phase == "Bound" || phase == "Released",
        trusted: true,
        uid: format!("uid-{name}"),
        resource_version: "1".into(),
    }
}

#[test]
fn each_blank_selected_disk_becomes_one_pv_named_after_its_stable_path() {
    let c = Case::new(
        spec(RawVolumeMode::Block, Some(vec!["/dev/vdb", "/dev/vdc"])),
        vec![
            disk("/dev/vda", "ext4"),
            disk("/dev/vdb", ""),
            disk("/dev/vdc", ""),
        ],
    );
    let p = c.run();
    let names: Vec<_> = p.create.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "local-worker-1-pci-0000-00-vdb.0",
            "local-worker-1-pci-0000-00-vdc.0"
        ]
    );
    assert_eq!(
        p.create[0].stable_path,
        "/dev/disk/by-path/pci-0000:00:vdb.0"
    );
    assert_eq!(p.create[0].size, 256 << 20);
    assert!(
        p.create.iter().all(|n| !n.format),
        "Block mode formats nothing"
    );
    assert_eq!(p.status.status, VGStatusType::Ready, "{:?}", p.status);
    assert_eq!(p.status.devices, ["/dev/vdb", "/dev/vdc"]);
    assert_eq!(p.status.excluded.len(), 1, "vda is listed, not selected");
}

#[test]
fn a_disk_with_any_signature_is_never_offered() {
    let c = Case::new(
        spec(RawVolumeMode::Filesystem, None),
        vec![
            disk("/dev/vdb", "xfs"),
            disk("/dev/vdc", "LVM2_member"),
            disk("/dev/vdd", ""),
        ],
    );
    let p = c.run();
    assert_eq!(p.create.len(), 1);
    assert_eq!(p.create[0].device, "/dev/vdd");
    assert!(p.create[0].format, "Filesystem mode formats the blank disk");
    let reasons: BTreeMap<_, _> = p
        .status
        .excluded
        .iter()
        .map(|e| (e.name.as_str(), e.reasons.join("; ")))
        .collect();
    assert!(
        reasons["/dev/vdb"].contains("filesystem signature (xfs)"),
        "{reasons:?}"
    );
    assert!(reasons["/dev/vdc"].contains("LVM2_member"), "{reasons:?}");
}

#[test]
fn a_required_disk_with_data_degrades_the_class_and_keeps_it() {
    let c = Case::new(
        spec(RawVolumeMode::Block, Some(vec!["/dev/vdb", "/dev/vdc"])),
        vec![disk("/dev/vdb", "ext4"), disk("/dev/vdc", "")],
    );
    let p = c.run();
    assert_eq!(p.create.len(), 1, "the blank one is still offered");
    assert_eq!(p.status.status, VGStatusType::Degraded);
    assert!(
        p.status
            .reason
            .contains("required device /dev/vdb cannot be used: has a filesystem signature (ext4)"),
        "{}",
        p.status.reason
    );
}

#[test]
fn disks_with_pvs_are_not_judged_again_and_released_ones_are_cleaned() {
    let mut c = Case::new(
        spec(RawVolumeMode::Block, None),
        vec![
            disk("/dev/vdb", "ext4"),
            disk("/dev/vdc", "xfs"),
            disk("/dev/vdd", ""),
        ],
    );
    c.pvs = vec![pv("pv-b", "vdb", "Bound"), pv("pv-c", "vdc", "Released")];
    let p = c.run();
    assert_eq!(p.create.len(), 1, "only vdd: {:?}", p.create);
    assert_eq!(p.create[0].device, "/dev/vdd");
    assert_eq!(
        p.clean,
        [Cleanup {
            pv: "pv-c".into(),
            device: "/dev/vdc".into(),
            size: 256 << 20,
            mounted: vec![],
            holders: vec![],
            uid: "uid-pv-c".into(),
            resource_version: "1".into(),
        }]
    );
    assert!(
        p.status.excluded.is_empty(),
        "a tenant's data is no exclusion: {:?}",
        p.status
    );
    assert_eq!(p.status.devices, ["/dev/vdb", "/dev/vdc", "/dev/vdd"]);
}

#[test]
fn a_pv_deleted_before_its_cleanup_is_cleaned_and_keeps_its_disk() {
    let mut c = Case::new(spec(RawVolumeMode::Block, None), vec![disk("/dev/vdb", "")]);
    // `kubectl delete pv`, or the garbage collector after the Node got a new uid: the cleanup
    // finalizer holds it; its disk is cleaned, never offered to another PV meanwhile.
    c.pvs = vec![PvView {
        deleting: true,
        ..pv("pv-b", "vdb", "Available")
    }];
    let p = c.run();
    assert!(p.create.is_empty(), "{p:?}");
    assert_eq!(p.clean.len(), 1);
    // A deleted PV still bound waits for its claim to go.
    c.pvs = vec![PvView {
        deleting: true,
        ..pv("pv-b", "vdb", "Bound")
    }];
    let p = c.run();
    assert!(p.create.is_empty() && p.clean.is_empty(), "{p:?}");
}

#[test]
fn a_pv_this_node_did_not_make_is_never_cleaned() {
    let mut c = Case::new(spec(RawVolumeMode::Block, None), vec![disk("/dev/vdb", "")]);
    c.pvs = vec![PvView {
        trusted: false,
        ..pv("someone-elses", "vdb", "Released")
    }];
    let p = c.run();
    assert!(
        p.clean.is_empty(),
        "labels alone do not make a PV ours: {p:?}"
    );
    assert!(p.create.is_empty(), "its disk is still taken");
}

#[test]
fn another_classes_disk_is_not_offered_twice() {
    let mut c = Case::new(
        spec(RawVolumeMode::Filesystem, Some(vec!["/dev/vdb"])),
        vec![disk("/dev/vdb", "")],
    );
    c.others = [(
        "/dev/vdb".to_string(),
        "PersistentVolume local-x of raw-device class disks".to_string(),
    )]
    .into();
    let p = c.run();
    assert!(p.create.is_empty(), "{p:?}");
    assert!(
        p.status
            .reason
            .contains("/dev/vdb is already offered as PersistentVolume local-x"),
        "{}",
        p.status.reason
    );
}

#[test]
fn a_released_disk_missing_from_the_scan_is_not_cleaned() {
    let mut c = Case::new(spec(RawVolumeMode::Block, None), vec![]);
    c.pvs = vec![pv("pv-b", "vdb", "Released")];
    // It resolves (the link exists) but the scan does not list it: no size, no mounts known.
    let stable = BTreeMap::new();
    let resolve =
        |p: &str| (p == "/dev/disk/by-path/pci-0000:00:vdb.0").then(|| "/dev/vdb".to_string());
    let p = plan(&Inputs {
        node: "worker-1",
        class: "disks",
        spec: &c.spec,
        devices: &c.devices,
        stable: &stable,
        pvs: &c.pvs,
        others: &BTreeMap::new(),
        pending: &BTreeSet::new(),
        resolve: &resolve,
        loops: &BTreeMap::new(),
        container_mounts: false,
    });
    assert!(p.clean.is_empty());
    assert!(
        p.status.reason.contains("not in the device scan"),
        "{}",
        p.status.reason
    );
}

#[test]
fn a_missing_disk_of_a_pv_is_reported_not_acted_on() {
    let mut c = Case::new(spec(RawVolumeMode::Block, None), vec![disk("/dev/vdc", "")]);
    c.pvs = vec![pv("pv-b", "vdb", "Released")];
    let p = c.run();
    assert!(p.clean.is_empty());
    assert_eq!(p.status.status, VGStatusType::Degraded);
    assert!(
        p.status.reason.contains(
            "disk /dev/disk/by-path/pci-0000:00:vdb.0 of PersistentVolume pv-b is missing"
        ),
        "{}",
        p.status.reason
    );
}

#[test]
fn our_own_format_survives_a_crash_before_the_pv() {
    let mut c = Case::new(
        spec(RawVolumeMode::Filesystem, None),
        vec![disk("/dev/vdb", "xfs"), disk("/dev/vdc", "ext4")],
    );
    c.pending = [
        "/dev/disk/by-path/pci-0000:00:vdb.0".to_string(),
        "/dev/disk/by-path/pci-0000:00:vdc.0".to_string(),
    ]
    .into();
    let p = c.run();
    assert_eq!(p.create.len(), 1, "{p:?}");
    assert_eq!(p.create[0].device, "/dev/vdb");
    assert!(!p.create[0].format, "not formatted twice");
    // vdc carries ext4, not the class's xfs: someone else's, whatever the record says.
    assert_eq!(p.status.excluded[0].name, "/dev/vdc");
}

#[test]
fn no_stable_path_no_pv() {
    let c = Case::new(
        spec(RawVolumeMode::Block, None),
        vec![disk("/dev/nostable", "")],
    );
    let p = c.run();
    assert!(p.create.is_empty());
    assert_eq!(p.status.status, VGStatusType::Failed);
    assert!(
        p.status.excluded[0].reasons[0].contains("no stable path"),
        "{:?}",
        p.status
    );
}

#[test]
fn released_but_mounted_is_not_cleaned() {
    let mut d = disk("/dev/vdb", "xfs");
    d.mountpoints = vec!["/var/lib/kubelet/pods/x".into()];
    let mut c = Case::new(spec(RawVolumeMode::Filesystem, None), vec![d]);
    c.pvs = vec![pv("pv-b", "vdb", "Released")];
    let p = c.run();
    let runner = NoCommands;
    let err = clean(&runner, &p.clean[0], RawCleanup::Zero).unwrap_err();
    assert!(
        err.contains("still mounted at /var/lib/kubelet/pods/x"),
        "{err}"
    );
}

struct NoCommands;
impl Runner for NoCommands {
    fn run(&self, program: &str, _: &[String]) -> Result<lvm::runner::Output, lvm::Error> {
        panic!("no command expected, ran {program}")
    }
}

#[test]
fn stable_paths_prefer_by_id_then_the_first_name() {
    let by_path = vec![
        (
            "/dev/disk/by-path/virtio-pci-0000:00:04.0".to_string(),
            "/dev/vdb".to_string(),
        ),
        (
            "/dev/disk/by-path/pci-0000:00:04.0".to_string(),
            "/dev/vdb".to_string(),
        ),
    ];
    let by_id = vec![
        (
            "/dev/disk/by-id/virtio-disk1".to_string(),
            "/dev/vdb".to_string(),
        ),
        (
            "/dev/disk/by-id/virtio-disk2".to_string(),
            "/dev/vdc".to_string(),
        ),
    ];
    let s = pick_stable(&[by_id, by_path.clone()]);
    assert_eq!(s["/dev/vdb"], "/dev/disk/by-id/virtio-disk1");
    assert_eq!(s["/dev/vdc"], "/dev/disk/by-id/virtio-disk2");
    let s = pick_stable(&[vec![], by_path]);
    assert_eq!(
        s["/dev/vdb"], "/dev/disk/by-path/pci-0000:00:04.0",
        "by-path, sorted first"
    );
}

#[test]
fn the_pv_is_static_local_retained_and_owned_by_the_node() {
    let mut node = Node::default();
    node.metadata.name = Some("worker-1".into());
    node.metadata.uid = Some("uid-1".into());
    node.metadata.labels = Some([("kubernetes.io/hostname".to_string(), "w1".to_string())].into());
    let s = spec(RawVolumeMode::Filesystem, None);
    let new = NewPv {
        name: "local-worker-1-pci-0".into(),
        device: "/dev/vdb".into(),
        stable_path: "/dev/disk/by-path/pci-0".into(),
        size: 1 << 30,
        format: true,
    };
    let pv = persistent_volume(&node, "disks", &s, &new);
    let v = serde_json::to_value(&pv).unwrap();
    assert_eq!(v["metadata"]["ownerReferences"][0]["kind"], "Node");
    assert_eq!(v["metadata"]["ownerReferences"][0]["uid"], "uid-1");
    assert_eq!(
        v["metadata"]["finalizers"],
        serde_json::json!([CLEANUP_FINALIZER])
    );
    // The PV is recognised as this node's own.
    assert!(PvView::of(&pv, "worker-1", "uid-1").trusted);
    let mut renamed = pv.clone();
    renamed.metadata.name = Some("local-worker-1-other".into());
    assert!(
        !PvView::of(&renamed, "worker-1", "uid-1").trusted,
        "name and path disagree"
    );
    let ours = pv.clone();
    assert!(PvView::of(&ours, "worker-1", "uid-1").trusted);
    assert!(
        !PvView::of(&ours, "worker-1", "uid-2").trusted,
        "owned by another Node object"
    );
    assert_eq!(v["metadata"]["labels"][NODE_LABEL], "worker-1");
    assert_eq!(v["spec"]["capacity"]["storage"], "1073741824");
    assert_eq!(v["spec"]["volumeMode"], "Filesystem");
    assert_eq!(v["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(v["spec"]["storageClassName"], "lvms-disks");
    assert_eq!(v["spec"]["local"]["path"], "/dev/disk/by-path/pci-0");
    assert_eq!(v["spec"]["local"]["fsType"], "xfs");
    let term =
        &v["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0];
    assert_eq!(term["key"], "kubernetes.io/hostname");
    assert_eq!(
        term["values"][0], "w1",
        "the hostname label, which may differ from the name"
    );
}
