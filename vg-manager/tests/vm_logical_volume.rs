//! The LogicalVolume reconciler on real LVM in the guest, with the API doubled in-process:
//! create a thin volume, repeat (idempotent), grow it, snapshot it, fail clearly when the pool
//! cannot hold it, and remove it behind the finalizer.

use std::sync::Arc;

use api_double::ApiDouble;
use lvm::{Exec, Lvm, Mode};
use lvms_api::LogicalVolume;
use serde_json::{Value, json};
use vg_manager::agent::Agent;
use vg_manager::logical_volume::{Action, code, reconcile};
use vg_manager::reports::Reports;
use vm_test::Disk;

const NS: &str = "openshift-storage";
const LVS: &str = "apis/topolvm.io/v1/logicalvolumes";

fn get(api: &ApiDouble, name: &str) -> LogicalVolume {
    serde_json::from_value(api.get(LVS, None, name).unwrap()).unwrap()
}

fn seed_lv(api: &ApiDouble, name: &str, size: &str, source: &str) -> LogicalVolume {
    let v: Value = api.seed(LVS, json!({"apiVersion": "topolvm.io/v1", "kind": "LogicalVolume", "metadata": {"name": name},
        "spec": {"name": name, "nodeName": "node-a", "deviceClass": "vg1", "size": size, "source": source}}));
    serde_json::from_value(v).unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn logical_volumes_on_real_lvm() {
    let Some(_) = vm_test::guest("logical_volumes_on_real_lvm", &[Disk::Blank("1G")]) else {
        return;
    };
    let api = ApiDouble::new();
    api.seed(
        "api/v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}}),
    );
    api.seed("apis/lvm.topolvm.io/v1alpha1/lvmvolumegroups", json!({"apiVersion": "lvm.topolvm.io/v1alpha1", "kind": "LVMVolumeGroup",
        "metadata": {"name": "vg1", "namespace": NS},
        "spec": {"deviceSelector": {"paths": ["/dev/vda"]}, "thinPoolConfig": {"name": "pool", "sizePercent": 90, "overprovisionRatio": 1}}}));
    let runner = Arc::new(Exec::new(Mode::Direct));
    let client = api.client();
    Agent::new(client.clone(), "node-a", NS, runner.clone())
        .pass()
        .await
        .unwrap();
    let lvm = Lvm::new(runner.clone());
    // The agent's shared report: the reconciler records its own changes in it.
    let reports = Reports::new(lvm.clone());

    // Create, then again: one LV, tagged, status with the volume ID and size.
    let lv = seed_lv(&api, "pvc-1", "100Mi", "");
    assert_eq!(
        reconcile(&client, &reports, "node-a", NS, &lv)
            .await
            .unwrap(),
        Action::Create {
            thin_pool: Some("pool".into()),
            size: 100 << 20,
            raid: None,
            stripes: None,
        }
    );
    let lv = get(&api, "pvc-1");
    let st = lv.status.clone().unwrap();
    let uid = lv.metadata.uid.clone().unwrap();
    assert_eq!(
        (
            st.volume_id.as_str(),
            st.code,
            st.current_size.unwrap().0.as_str()
        ),
        (uid.as_str(), code::OK, "104857600")
    );
    assert_eq!(
        lv.metadata.finalizers.clone().unwrap(),
        ["topolvm.io/logicalvolume"]
    );
    assert_eq!(
        reconcile(&client, &reports, "node-a", NS, &lv)
            .await
            .unwrap(),
        Action::Report { size: 100 << 20 }
    );
    let r = lvm.report().unwrap();
    assert_eq!(r.lvs_of("vg1").filter(|l| l.is_thin_volume()).count(), 1);
    assert!(
        r.lv("vg1", &uid)
            .unwrap()
            .has_tag("lvms.topolvm.io/logicalvolume=pvc-1")
    );

    // Grow.
    api.patch(LVS, None, "pvc-1", json!({"spec": {"size": "200Mi"}}));
    reconcile(&client, &reports, "node-a", NS, &get(&api, "pvc-1"))
        .await
        .unwrap();
    assert_eq!(
        get(&api, "pvc-1").status.unwrap().current_size.unwrap().0,
        "209715200"
    );

    // Snapshot of it (source = its volume ID), active and the same size.
    let snap = seed_lv(&api, "snap-1", "200Mi", &uid);
    assert!(matches!(
        reconcile(&client, &reports, "node-a", NS, &snap)
            .await
            .unwrap(),
        Action::Snapshot { .. }
    ));
    let snap = get(&api, "snap-1");
    let snap_lv = lvm
        .report()
        .unwrap()
        .lv("vg1", snap.metadata.uid.as_deref().unwrap())
        .cloned()
        .unwrap();
    assert_eq!(
        (snap_lv.origin.as_str(), snap_lv.is_active()),
        (uid.as_str(), true)
    );

    // More than a ratio-1 pool may promise: ResourceExhausted, and no LV is created.
    let big = seed_lv(&api, "pvc-big", "5Gi", "");
    let before = lvm.report().unwrap().lvs.len();
    reconcile(&client, &reports, "node-a", NS, &big)
        .await
        .unwrap();
    let st = get(&api, "pvc-big").status.unwrap_or_default();
    assert_eq!(st.code, code::RESOURCE_EXHAUSTED, "{st:?}");
    assert!(
        st.message.contains("available in device class vg1"),
        "{}",
        st.message
    );
    assert_eq!(lvm.report().unwrap().lvs.len(), before);

    // Delete: the LV goes, then the finalizer, then the object.
    let lvs: kube::Api<LogicalVolume> = kube::Api::all(client.clone());
    lvs.delete("snap-1", &Default::default()).await.unwrap();
    assert_eq!(
        reconcile(&client, &reports, "node-a", NS, &get(&api, "snap-1"))
            .await
            .unwrap(),
        Action::Remove { clear: None }
    );
    assert!(api.get(LVS, None, "snap-1").is_none());
    assert!(
        lvm.report()
            .unwrap()
            .lv("vg1", snap.metadata.uid.as_deref().unwrap())
            .is_none()
    );
}
