//! A deleted volume's data never reaches the next volume (issue 15, part 1), on real LVM in the
//! guest through the LogicalVolume reconciler: a thick class, one 512 MiB volume at a time on a
//! disk that holds one, so each new volume gets the extents of the one before. With the default
//! `volumeCleanup` (zero) and with `discard`, the next volume reads zeros; with `none` it reads
//! the previous tenant's pattern (the control: the test can tell). A thin class's pool zeroes
//! blocks on first use, so its next volume reads zeros without any cleanup.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Instant;

use api_double::ApiDouble;
use lvm::{Exec, Lvm, Mode};
use lvms_api::LogicalVolume;
use serde_json::{Value, json};
use vg_manager::agent::Agent;
use vg_manager::logical_volume::{Action, reconcile};
use vg_manager::reports::Reports;
use vm_test::Disk;

const NS: &str = "openshift-storage";
const LVS: &str = "apis/topolvm.io/v1/logicalvolumes";
const VGS: &str = "apis/lvm.topolvm.io/v1alpha1/lvmvolumegroups";
const MIB: usize = 1 << 20;

fn get(api: &ApiDouble, name: &str) -> LogicalVolume {
    serde_json::from_value(api.get(LVS, None, name).unwrap()).unwrap()
}

fn seed_lv(api: &ApiDouble, name: &str, class: &str, size: &str) -> LogicalVolume {
    let v: Value = api.seed(
        LVS,
        json!({"apiVersion": "topolvm.io/v1", "kind": "LogicalVolume", "metadata": {"name": name},
        "spec": {"name": name, "nodeName": "node-a", "deviceClass": class, "size": size}}),
    );
    serde_json::from_value(v).unwrap()
}

/// Writes `byte` over the first `mib` MiB of `dev` and flushes.
fn fill(dev: &str, byte: u8, mib: usize) {
    let mut f = std::fs::OpenOptions::new().write(true).open(dev).unwrap();
    let buf = vec![byte; MIB];
    for _ in 0..mib {
        f.write_all(&buf).unwrap();
    }
    f.sync_all().unwrap();
}

/// How many of the first `mib` MiB of `dev` are not all zeros.
fn dirty_mib(dev: &str, mib: usize) -> usize {
    let mut f = std::fs::File::open(dev).unwrap();
    let mut buf = vec![0u8; MIB];
    (0..mib)
        .filter(|_| {
            f.read_exact(&mut buf).unwrap();
            buf.iter().any(|b| *b != 0)
        })
        .count()
}

struct Node {
    api: ApiDouble,
    reports: Reports,
    lvm: Lvm,
}

impl Node {
    async fn create(&self, name: &str, class: &str, size: &str) -> String {
        let lv = seed_lv(&self.api, name, class, size);
        let client = self.api.client();
        let a = reconcile(&client, &self.reports, "node-a", NS, &lv)
            .await
            .unwrap();
        assert!(matches!(a, Action::Create { .. }), "{a:?}");
        let uid = get(&self.api, name).metadata.uid.unwrap();
        format!("/dev/{class}/{uid}")
    }

    /// Deletes the LogicalVolume as the CSI controller does, and lets the reconciler remove it.
    async fn delete(&self, name: &str) -> Action {
        let api: kube::Api<LogicalVolume> = kube::Api::all(self.api.client());
        api.delete(name, &Default::default()).await.unwrap();
        let client = self.api.client();
        let action = reconcile(&client, &self.reports, "node-a", NS, &get(&self.api, name))
            .await
            .unwrap();
        assert!(
            self.api.get(LVS, None, name).is_none(),
            "released after removal"
        );
        action
    }

    fn set_cleanup(&self, how: &str) {
        self.api.patch(
            VGS,
            Some(NS),
            "thick",
            json!({"spec": {"volumeCleanup": how}}),
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_deleted_volumes_data_never_reaches_the_next() {
    let disks = [Disk::Blank("600M"), Disk::Blank("600M")];
    let Some(_) = vm_test::guest("a_deleted_volumes_data_never_reaches_the_next", &disks) else {
        return;
    };
    let api = ApiDouble::new();
    api.seed(
        "api/v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}}),
    );
    api.seed(
        VGS,
        json!({"apiVersion": "lvm.topolvm.io/v1alpha1", "kind": "LVMVolumeGroup",
        "metadata": {"name": "thick", "namespace": NS},
        "spec": {"deviceSelector": {"paths": ["/dev/vda"]}}}),
    );
    api.seed(VGS, json!({"apiVersion": "lvm.topolvm.io/v1alpha1", "kind": "LVMVolumeGroup",
        "metadata": {"name": "thin", "namespace": NS},
        "spec": {"deviceSelector": {"paths": ["/dev/vdb"]}, "thinPoolConfig": {"name": "pool", "sizePercent": 90, "overprovisionRatio": 1}}}));
    let runner = Arc::new(Exec::new(Mode::Direct));
    Agent::new(api.client(), "node-a", NS, runner.clone())
        .pass()
        .await
        .unwrap();
    let lvm = Lvm::new(runner.clone());
    let node = Node {
        api,
        reports: Reports::new(lvm.clone()),
        lvm,
    };
    let pool = node
        .lvm
        .report()
        .unwrap()
        .lv("thin", "pool")
        .cloned()
        .unwrap();
    assert!(
        pool.zeroes_new_blocks(),
        "pools are made with --zero y: {}",
        pool.attr
    );

    // Thick, default cleanup (zero): the next volume on the same extents reads zeros.
    let dev = node.create("t1", "thick", "512Mi").await;
    fill(&dev, 0xab, 512);
    let t = Instant::now();
    let action = node.delete("t1").await;
    println!(
        "FIGURE volumeCleanup zero, 512 MiB thick volume, DeleteVolume on the node: {:.2} s (TCG guest)",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(
        action,
        Action::Remove {
            clear: Some(lvm::Clear::Zero)
        }
    );
    let dev = node.create("t2", "thick", "512Mi").await;
    assert_eq!(dirty_mib(&dev, 512), 0, "zero: the next volume reads zeros");

    // The control: with none, the next volume reads the previous tenant's data.
    node.set_cleanup("none");
    fill(&dev, 0xcd, 512);
    let t = Instant::now();
    node.delete("t2").await;
    println!(
        "FIGURE volumeCleanup none, 512 MiB thick volume: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let dev = node.create("t3", "thick", "512Mi").await;
    let leaked = dirty_mib(&dev, 512);
    assert!(
        leaked > 500,
        "none leaves the data (the test can see it): {leaked} MiB"
    );

    // Discard (the guest's disks discard, and read discarded blocks back as zeros).
    node.set_cleanup("discard");
    let t = Instant::now();
    let action = node.delete("t3").await;
    println!(
        "FIGURE volumeCleanup discard, 512 MiB thick volume: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(
        action,
        Action::Remove {
            clear: Some(lvm::Clear::Discard)
        }
    );
    let dev = node.create("t4", "thick", "512Mi").await;
    assert_eq!(
        dirty_mib(&dev, 512),
        0,
        "discard: the next volume reads zeros"
    );

    // Thin: no cleanup, the pool zeroes what a new volume first touches.
    let dev = node.create("v1", "thin", "256Mi").await;
    fill(&dev, 0xef, 256);
    assert_eq!(node.delete("v1").await, Action::Remove { clear: None });
    let dev = node.create("v2", "thin", "256Mi").await;
    // A partial write to a fresh block: the rest of the block must read zero, not old data.
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
        f.write_all(&[1u8; 512]).unwrap();
        f.sync_all().unwrap();
    }
    let mut head = vec![0u8; MIB];
    std::fs::File::open(&dev)
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    assert!(
        head[512..].iter().all(|b| *b == 0),
        "the pool zeroed the block before use"
    );
    assert_eq!(dirty_mib(&dev, 256), 1, "only the block just written");
}
