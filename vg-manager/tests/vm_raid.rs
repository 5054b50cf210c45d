//! RAID device classes and the device discovery policy on real LVM (dm-raid) in the guest, with
//! the API doubled in-process: every level builds, reports the capacity it can really make, and
//! holds data; a raid1 class that loses a disk (the guest boots without it) turns Degraded with
//! the volume named, keeps the data, and is Healthy again after `lvconvert --repair`, and Failed
//! when both its disks are gone; a disk that appears after creation stays out under Static
//! discovery and joins under Dynamic.

use std::io::{Read, Seek, SeekFrom, Write};
use std::process::Command;
use std::sync::Arc;

use api_double::ApiDouble;
use lvm::{Exec, Lvm, Mode, Report};
use lvms_api::LogicalVolume;
use serde_json::{Value, json};
use vg_manager::agent::Agent;
use vg_manager::logical_volume::{Action, code, reconcile};
use vg_manager::metrics::Metrics;
use vg_manager::reports::Reports;
use vm_test::Disk;

const NS: &str = "openshift-storage";
const VGS: &str = "apis/lvm.topolvm.io/v1alpha1/lvmvolumegroups";
const STATUSES: &str = "apis/lvm.topolvm.io/v1alpha1/lvmvolumegroupnodestatuses";
const NODES: &str = "api/v1/nodes";
const LVS: &str = "apis/topolvm.io/v1/logicalvolumes";
const MIB: u64 = 1 << 20;

fn lvm_cmd(args: &[&str]) -> String {
    let out = Command::new("lvm").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "lvm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One column of one LV, as `lvs` prints it in bytes.
fn lv_field(vg: &str, lv: &str, field: &str) -> String {
    lvm_cmd(&[
        "lvs",
        "--noheadings",
        "--units",
        "b",
        "--nosuffix",
        "-o",
        field,
        &format!("{vg}/{lv}"),
    ])
}

fn double(classes: &[(&str, Value)]) -> ApiDouble {
    let api = ApiDouble::new();
    api.seed(
        NODES,
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}}),
    );
    for (name, spec) in classes {
        api.seed(
            VGS,
            json!({"apiVersion": "lvm.topolvm.io/v1alpha1", "kind": "LVMVolumeGroup",
            "metadata": {"name": name, "namespace": NS}, "spec": spec}),
        );
    }
    api
}

fn status_of(api: &ApiDouble, class: &str) -> Value {
    let all =
        api.get(STATUSES, Some(NS), "node-a").expect("node status")["spec"]["nodeStatus"].clone();
    all.as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == class)
        .unwrap_or_else(|| panic!("no status for {class}: {all}"))
        .clone()
}

fn capacity(api: &ApiDouble, class: &str) -> u64 {
    api.get(NODES, None, "node-a").unwrap()["metadata"]["annotations"]
        [format!("capacity.topolvm.io/{class}")]
    .as_str()
    .unwrap_or_else(|| panic!("no capacity for {class}"))
    .parse()
    .unwrap()
}

fn seed_lv(api: &ApiDouble, name: &str, class: &str, size: u64, source: &str) -> LogicalVolume {
    let v = api.seed(LVS, json!({"apiVersion": "topolvm.io/v1", "kind": "LogicalVolume", "metadata": {"name": name},
        "spec": {"name": name, "nodeName": "node-a", "deviceClass": class, "size": size.to_string(), "source": source}}));
    serde_json::from_value(v).unwrap()
}

fn get_lv(api: &ApiDouble, name: &str) -> LogicalVolume {
    serde_json::from_value(api.get(LVS, None, name).unwrap()).unwrap()
}

/// A pattern that differs per volume and per offset, so a misplaced block cannot pass.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

fn write_device(path: &str, data: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

/// Reads `len` bytes from the device itself, not from the page cache.
fn read_device(path: &str, len: usize) -> Vec<u8> {
    std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut buf = vec![0; len];
    f.read_exact(&mut buf).unwrap();
    buf
}

/// The LV of ours that LogicalVolume `name` owns, found by its tag (the API double of an earlier
/// phase is gone; LVM remembers).
fn lv_of(report: &Report, vg: &str, name: &str) -> String {
    let tag = format!("lvms.topolvm.io/logicalvolume={name}");
    report
        .lvs_of(vg)
        .find(|l| l.has_tag(&tag))
        .unwrap_or_else(|| panic!("no LV tagged {tag} in {vg}"))
        .name
        .clone()
}

fn paths(disks: &[String]) -> Value {
    json!({"paths": disks})
}

#[tokio::test(flavor = "current_thread")]
async fn raid_levels_build_report_what_they_can_make_and_hold_data() {
    let disks = vec![Disk::Blank("256M"); 17];
    let Some(g) = vm_test::guest(
        "raid_levels_build_report_what_they_can_make_and_hold_data",
        &disks,
    ) else {
        return;
    };
    let d = &g.disks;
    // (class, raidConfig, its disks, expected segment type, data stripes)
    let classes: [(&str, Value, &[String], &str, u32); 5] = [
        ("r1", json!({"type": "raid1"}), &d[0..2], "raid1", 1),
        ("r4", json!({"type": "raid4"}), &d[2..5], "raid4", 2),
        (
            "r5",
            json!({"type": "raid5", "stripeSize": "128Ki"}),
            &d[5..8],
            "raid5",
            2,
        ),
        ("r6", json!({"type": "raid6"}), &d[8..13], "raid6", 3),
        ("r10", json!({"type": "raid10"}), &d[13..17], "raid10", 2),
    ];
    let specs: Vec<(&str, Value)> = classes
        .iter()
        .map(|(n, raid, disks, ..)| {
            (
                *n,
                json!({"deviceSelector": paths(disks), "raidConfig": raid}),
            )
        })
        .collect();
    let api = double(&specs);
    let runner = Arc::new(Exec::new(Mode::Direct));
    let agent = Agent::new(api.client(), "node-a", NS, runner.clone());
    let out = agent.pass().await.unwrap();
    assert!(out.changed);
    assert!(
        !out.rescan,
        "explicit paths, all built: no periodic disk scan"
    );
    let lvm = Lvm::new(runner.clone());
    // The agent's reports: what the LogicalVolume reconciler changes, its capacity refresh sees.
    let reports = agent.reports.clone();
    let client = api.client();

    for (class, _, disks, segtype, data_stripes) in &classes {
        let st = status_of(&api, class);
        assert_eq!(st["status"], "Ready", "{st}");
        assert_eq!(st["deviceDiscoveryPolicy"], "Preconfigured");
        assert_eq!(st["raidStatus"]["status"], "Healthy", "{st}");
        assert_eq!(st["raidStatus"]["memberCount"], disks.len());
        let report = lvm.report().unwrap();
        let vg = report.vg(class).unwrap().clone();
        assert!(
            report.lvs_of(class).next().is_none(),
            "a RAID class is thick: no pool"
        );

        // Capacity is what the level can make: one more stripe of extents does not fit.
        let cap = capacity(&api, class);
        assert!(cap > 0, "{class}");
        let step = *data_stripes as u64 * vg.extent_size;
        let mut args: Vec<String> = ["lvcreate", "--yes", "--type", segtype, "--name", "too-big"]
            .map(String::from)
            .to_vec();
        args.extend(["--size".into(), format!("{}b", cap + step)]);
        if *segtype != "raid1" {
            args.extend(["--stripes".into(), data_stripes.to_string()]);
        }
        args.push(class.to_string());
        let too_big = Command::new("lvm").args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&too_big.stderr);
        assert!(
            !too_big.status.success() && stderr.contains("Insufficient"),
            "{class}: {step} bytes more than reported: {stderr}"
        );
        println!(
            "FIGURE {segtype} on {} x 256 MiB (raw {} MiB, VG free {} MiB): capacity reported {} MiB = the largest volume lvcreate accepts (one stripe more fails)",
            disks.len(),
            disks.len() as u64 * 256,
            vg.free / MIB,
            cap / MIB
        );

        // A volume of exactly that capacity, made through the LogicalVolume reconciler.
        let name = format!("lv-{class}");
        let first = if *class == "r1" { cap / 2 } else { cap };
        let lv = seed_lv(&api, &name, class, first, "");
        let action = reconcile(&client, &reports, "node-a", NS, &lv)
            .await
            .unwrap();
        assert!(
            matches!(action, Action::Create { raid: Some(r), .. } if r.stripes == *data_stripes),
            "{class}: {action:?}"
        );
        let lv = get_lv(&api, &name);
        assert_eq!(lv.status.as_ref().unwrap().code, code::OK, "{lv:?}");
        let uid = lv.metadata.uid.clone().unwrap();
        assert_eq!(lv_field(class, &uid, "segtype"), *segtype);
        // Images over every disk of the class (lvm2 counts raid1's copies as its "stripes").
        assert_eq!(lv_field(class, &uid, "stripes"), disks.len().to_string());
        if *segtype != "raid1" {
            assert_eq!(
                lv_field(class, &uid, "data_stripes"),
                data_stripes.to_string()
            );
        }
        if *class == "r5" {
            assert_eq!(lv_field(class, &uid, "stripe_size"), "131072");
        }
        if *class == "r1" {
            // Online expansion: lvextend of the RAID volume to the whole capacity.
            let mut grown = lv.clone();
            grown.spec.size.0 = cap.to_string();
            api.patch(LVS, None, &name, json!({"spec": {"size": cap.to_string()}}));
            let action = reconcile(&client, &reports, "node-a", NS, &grown)
                .await
                .unwrap();
            assert_eq!(action, Action::Extend { size: cap });
            assert_eq!(lv_field(class, &uid, "lv_size"), cap.to_string());
        }
        agent.refresh_capacity().await.unwrap();
        assert_eq!(capacity(&api, class), 0, "{class}: the volume took it all");

        // Data written reads back from the devices.
        let dev = format!("/dev/{class}/{uid}");
        let data = pattern(class.len() as u8, 8 * MIB as usize);
        write_device(&dev, &data);
        assert!(
            read_device(&dev, data.len()) == data,
            "{class}: data differs"
        );

        // Snapshots and clones need a thin class.
        let snap = seed_lv(&api, &format!("snap-{class}"), class, MIB, &uid);
        assert!(matches!(
            reconcile(&client, &reports, "node-a", NS, &snap).await.unwrap(),
            Action::Fail { code: code::INVALID_ARGUMENT, message } if message.contains("RAID class")
        ));
    }
    // The health of every class, in the metrics.
    let metrics = Metrics::default();
    let out = agent.pass().await.unwrap();
    metrics.set_raid("node-a", &out.statuses);
    let text = metrics.render();
    for (class, ..) in &classes {
        assert!(
            text.contains(&format!(
                r#"lvms_raid_health_status{{node="node-a",device_class="{class}"}} 0"#
            )),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn raid1_loses_a_disk_turns_degraded_and_is_repaired() {
    // r5 on the first three disks, r1 on the last two: the pulled disk is the last, so the
    // others keep their names (/dev/vdX follow the order of attachment).
    let dir = vm_test::scratch_dir("raid-repair");
    let img = |n: &str| dir.join(format!("{n}.img"));
    for n in ["c", "d", "e", "a", "b", "new"] {
        if std::env::var_os(vm_test::IN_VM).is_none() {
            vm_test::image(&img(n), 512 * MIB);
        }
    }
    let disk = |n: &str| Disk::Image(img(n));
    let all = [disk("c"), disk("d"), disk("e"), disk("a"), disk("b")];
    let pulled = [disk("c"), disk("d"), disk("e"), disk("a")];
    let replaced = [disk("c"), disk("d"), disk("e"), disk("a"), disk("new")];
    let both_gone = [disk("c"), disk("d"), disk("e")];
    let Some((g, phase)) = vm_test::guest_stages(
        "raid1_loses_a_disk_turns_degraded_and_is_repaired",
        &[&all, &pulled, &replaced, &both_gone],
    ) else {
        return;
    };
    let r5_paths = json!(["/dev/vda", "/dev/vdb", "/dev/vdc"]);
    let r1_paths = json!(["/dev/vdd", "/dev/vde"]);
    let api = double(&[
        (
            "r5",
            json!({"deviceSelector": {"paths": r5_paths}, "raidConfig": {"type": "raid5"}}),
        ),
        (
            "r1",
            json!({"deviceSelector": {"paths": r1_paths}, "raidConfig": {"type": "raid1"}}),
        ),
    ]);
    let runner = Arc::new(Exec::new(Mode::Direct));
    let agent = Agent::new(api.client(), "node-a", NS, runner.clone());
    let lvm = Lvm::new(runner.clone());
    let data = |class: &str| pattern(class.len() as u8 * 3, 4 * MIB as usize);
    let metrics = Metrics::default();
    let health = |out: &vg_manager::agent::Outcome| {
        metrics.set_raid("node-a", &out.statuses);
        metrics.render()
    };

    match phase {
        1 => {
            assert_eq!(g.disks.len(), 5);
            agent.pass().await.unwrap();
            let reports = Reports::new(lvm.clone());
            for class in ["r1", "r5"] {
                assert_eq!(status_of(&api, class)["status"], "Ready");
                let lv = seed_lv(&api, &format!("data-{class}"), class, 64 * MIB, "");
                reconcile(&api.client(), &reports, "node-a", NS, &lv)
                    .await
                    .unwrap();
                let uid = get_lv(&api, &format!("data-{class}")).metadata.uid.unwrap();
                write_device(&format!("/dev/{class}/{uid}"), &data(class));
            }
            lvm_cmd(&["vgchange", "--activate", "n", "r1", "r5"]);
        }
        2 => {
            // /dev/vde is gone. The raid1 volume still activates (degraded), as the CSI node
            // service activates a volume on publish, and has the data.
            assert_eq!(g.disks.len(), 4);
            let report = lvm.report().unwrap();
            let uid = lv_of(&report, "r1", "data-r1");
            lvm.activate("r1", &uid).unwrap();
            let out = agent.pass().await.unwrap();
            let st = status_of(&api, "r1");
            assert_eq!(st["status"], "Degraded", "{st}");
            let reason = st["reason"].as_str().unwrap();
            assert!(
                reason.contains(&uid) && reason.contains("lvconvert --repair r1/"),
                "the volume is named: {reason}"
            );
            assert_eq!(st["raidStatus"]["status"], "Degraded");
            assert_eq!(st["raidStatus"]["memberCount"], 2);
            assert_eq!(st["raidStatus"]["degradedMemberCount"], 1);
            assert_eq!(st["raidStatus"]["lvHealth"][0]["name"], uid.as_str());
            assert_eq!(st["raidStatus"]["lvHealth"][0]["healthStatus"], "partial");
            assert_eq!(status_of(&api, "r5")["raidStatus"]["status"], "Healthy");
            let text = health(&out);
            assert!(
                text.contains(r#"lvms_raid_health_status{node="node-a",device_class="r1"} 1"#),
                "{text}"
            );
            assert!(text.contains(r#"lvms_raid_health_status{node="node-a",device_class="r5"} 0"#));
            assert_eq!(
                capacity(&api, "r1"),
                0,
                "lvm2 changes no VG that misses a PV"
            );
            // (decided directly: the API double of this boot would give it phase 1's UID)
            let mut lv = seed_lv(&api, "new-r1", "r1", 8 * MIB, "");
            lv.metadata.uid = Some("a-new-uid".into());
            let class: lvms_api::LVMVolumeGroup =
                serde_json::from_value(api.get(VGS, Some(NS), "r1").unwrap()).unwrap();
            let action = vg_manager::logical_volume::decide(&lv, "node-a", Some(&class), &report);
            assert!(
                matches!(&action, Action::Fail { code: code::RESOURCE_EXHAUSTED, message } if message.contains("missing 1 physical volume")),
                "{action:?}"
            );
            assert!(
                out.rescan,
                "a degraded class is rescanned: its disk may be replaced"
            );
            assert!(
                read_device(&format!("/dev/r1/{uid}"), 4 * MIB as usize) == data("r1"),
                "the degraded mirror still has the data"
            );
            println!("FIGURE degraded raid1 status: {st}");
        }
        3 => {
            // A blank disk sits where the old one was: the agent adds it (it is a listed path),
            // the user repairs the volume onto it and drops the missing member.
            assert_eq!(g.disks.len(), 5);
            let _ = Command::new("lvm")
                .args(["vgchange", "--activate", "y", "r1", "r5"])
                .output();
            agent.pass().await.unwrap();
            let st = status_of(&api, "r1");
            assert_eq!(st["status"], "Degraded", "still missing a member: {st}");
            let report = lvm.report().unwrap();
            assert!(
                report.pvs_of("r1").any(|p| p.name == "/dev/vde"),
                "the new disk joined r1"
            );
            let uid = lv_of(&report, "r1", "data-r1");
            let t = std::time::Instant::now();
            lvm_cmd(&[
                "lvconvert",
                "--repair",
                "--yes",
                &format!("r1/{uid}"),
                "/dev/vde",
            ]);
            while lv_field("r1", &uid, "sync_percent") != "100.00" {
                assert!(t.elapsed().as_secs() < 120, "the repair never synced");
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            println!(
                "FIGURE raid1 repair of a 64 MiB volume onto a new disk: synced in {:.1} s",
                t.elapsed().as_secs_f64()
            );
            lvm_cmd(&["vgreduce", "--removemissing", "r1"]);
            let out = agent.pass().await.unwrap();
            let st = status_of(&api, "r1");
            assert_eq!(st["status"], "Ready", "{st}");
            assert_eq!(st["raidStatus"]["status"], "Healthy");
            assert_eq!(st["raidStatus"]["degradedMemberCount"], 0);
            assert_eq!(st["devices"], json!(["/dev/vdd", "/dev/vde"]));
            assert!(
                health(&out)
                    .contains(r#"lvms_raid_health_status{node="node-a",device_class="r1"} 0"#)
            );
            for class in ["r1", "r5"] {
                let uid = lv_of(&lvm.report().unwrap(), class, &format!("data-{class}"));
                assert!(
                    read_device(&format!("/dev/{class}/{uid}"), 4 * MIB as usize) == data(class),
                    "{class}: data survived the reboots and the repair"
                );
            }
        }
        4 => {
            // Both raid1 disks gone: no r1 VG is found at all. The status the agent wrote before
            // (kept by the API server across the reboot; seeded here) says it existed, so the
            // class is Failed and the gauge 2, not a class that was never built.
            assert_eq!(g.disks.len(), 3);
            let before = json!({"name": "r1", "status": "Ready", "devices": ["/dev/vdd", "/dev/vde"],
                "raidStatus": {"status": "Healthy", "memberCount": 2, "degradedMemberCount": 0, "minSyncPercent": 100,
                    "lvHealth": [{"name": "uid-r1", "raidType": "raid1", "syncPercent": 100}]}});
            api.seed(
                STATUSES,
                json!({"apiVersion": "lvm.topolvm.io/v1alpha1", "kind": "LVMVolumeGroupNodeStatus",
                "metadata": {"name": "node-a", "namespace": NS}, "spec": {"nodeStatus": [before]}}),
            );
            let out = agent.pass().await.unwrap();
            let st = status_of(&api, "r1");
            assert_eq!(st["status"], "Failed", "{st}");
            assert!(
                st["reason"]
                    .as_str()
                    .unwrap()
                    .starts_with("RAID volume group r1 is gone from this node"),
                "{st}"
            );
            assert_eq!(st["raidStatus"]["status"], "Failed");
            assert_eq!(st["raidStatus"]["lvHealth"][0]["healthStatus"], "missing");
            let text = health(&out);
            assert!(
                text.contains(r#"lvms_raid_health_status{node="node-a",device_class="r1"} 2"#),
                "{text}"
            );
            assert_eq!(status_of(&api, "r5")["raidStatus"]["status"], "Healthy");
        }
        _ => unreachable!("four phases"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn static_discovery_keeps_a_late_disk_out_and_dynamic_takes_it() {
    let Some(_) = vm_test::guest(
        "static_discovery_keeps_a_late_disk_out_and_dynamic_takes_it",
        &[Disk::Blank("512M")],
    ) else {
        return;
    };
    // No paths: the class takes every eligible disk; the policy is unset (Static for a new VG).
    let api = double(&[("vg1", json!({}))]);
    let runner = Arc::new(Exec::new(Mode::Direct));
    let agent = Agent::new(api.client(), "node-a", NS, runner.clone());
    let out = agent.pass().await.unwrap();
    let st = status_of(&api, "vg1");
    assert_eq!(st["status"], "Ready", "{st}");
    assert_eq!(st["deviceDiscoveryPolicy"], "RuntimeStatic");
    assert_eq!(st["devices"], json!(["/dev/vda"]));
    assert!(
        !out.rescan,
        "a built Static class is not rescanned periodically"
    );

    // A disk appears after creation (a loop device over a file).
    let _ = Command::new("modprobe").arg("loop").output();
    std::fs::File::create("/var/tmp/late.img")
        .unwrap()
        .set_len(256 * MIB)
        .unwrap();
    let out = Command::new("losetup")
        .args(["--find", "--show", "/var/tmp/late.img"])
        .output()
        .unwrap();
    let late = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(late.starts_with("/dev/loop"), "{out:?}");

    // A periodic pass without a scan does not see it, and costs one command: the LVM report.
    let before = runner.invocations();
    agent.pass_with(false).await.unwrap();
    assert_eq!(
        runner.invocations() - before,
        1,
        "commands per unscanned pass"
    );
    assert_eq!(status_of(&api, "vg1")["excluded"], Value::Null);

    agent.pass().await.unwrap();
    let st = status_of(&api, "vg1");
    assert_eq!(st["devices"], json!(["/dev/vda"]), "nothing joined: {st}");
    let excluded = st["excluded"].as_array().unwrap();
    let entry = excluded
        .iter()
        .find(|e| e["name"] == late.as_str())
        .unwrap();
    assert_eq!(
        entry["reasons"],
        json!([format!(
            "{late} was not part of vg1 at creation (static device discovery enabled)"
        )])
    );

    // Dynamic: it joins, and the class is rescanned periodically from now on.
    api.patch(
        VGS,
        Some(NS),
        "vg1",
        json!({"spec": {"deviceDiscoveryPolicy": "Dynamic"}}),
    );
    let out = agent.pass().await.unwrap();
    assert!(out.rescan);
    let st = status_of(&api, "vg1");
    assert_eq!(st["deviceDiscoveryPolicy"], "RuntimeDynamic");
    let mut joined = vec![late.clone(), "/dev/vda".to_string()];
    joined.sort();
    assert_eq!(st["devices"], json!(joined), "{st}");
    let report = Lvm::new(runner.clone()).report().unwrap();
    assert!(report.pvs_of("vg1").any(|p| p.name == late));
    assert!(
        report
            .vg("vg1")
            .unwrap()
            .has_tag(vg_manager::plan::CREATED_TAG),
        "the VG remembers it was created here"
    );
    Command::new("lvm")
        .args(["vgremove", "--yes", "vg1"])
        .output()
        .unwrap();
    let _ = Command::new("losetup").args(["--detach", &late]).output();
}
