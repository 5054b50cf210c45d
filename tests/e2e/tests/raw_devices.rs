//! A raw-device class against a real cluster: `LVMS_E2E=1 LVMS_E2E_RAW_DEVICE=/dev/disk/by-id/...
//! [LVMS_E2E_RAW_NODE=<hostname>] cargo test -p e2e --test raw_devices` (skipped without the
//! device). The device must be a blank disk used by no other class: the test adds a Block class
//! over it to the suite's LVMCluster, claims the disk's PV with a real PVC, writes through a pod,
//! deletes the claim, and waits for the node to clean the disk and offer it again as a new PV of
//! the same name, which a second claim reads back blank. The class is removed at the end.

use std::time::Duration;

use e2e::*;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use lvms_api::raw::CLASS_LABEL;
use serde_json::json;

const CLASS: &str = "raw-e2e";
/// Release → cleanup → a new PV: the PV watch starts it at once; zeroing 100 MiB takes seconds.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(180);
const PATTERN: &str = "lvms-e2e-raw-device-tenant-data";

fn raw_device() -> Option<String> {
    std::env::var("LVMS_E2E_RAW_DEVICE")
        .ok()
        .filter(|d| !d.is_empty())
}

#[tokio::test]
async fn a_raw_disk_is_claimed_cleaned_and_offered_again() {
    let test = "a_raw_disk_is_claimed_cleaned_and_offered_again";
    let Some(env) = Env::get(test).await else {
        return;
    };
    let Some(device) = raw_device() else {
        println!("skipped {test}: set LVMS_E2E_RAW_DEVICE to a blank disk of a node");
        return;
    };
    let cluster = env
        .ensure_cluster()
        .await
        .unwrap_or_else(|e| panic!("the suite's LVMCluster is not usable: {e}"));
    let mut classes = serde_json::to_value(&cluster.spec.storage.device_classes).unwrap();
    let mut class = json!({
        "name": CLASS,
        "deviceSelector": {"paths": [device]},
        "rawDevices": {"volumeMode": "Block", "cleanup": "zero"},
    });
    if let Ok(node) = std::env::var("LVMS_E2E_RAW_NODE") {
        class["nodeSelector"] = json!({"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]});
    }
    classes.as_array_mut().unwrap().push(class);
    set_classes(&env, classes.clone()).await.unwrap();

    run_test(&env, async |env, cleanup| body(env, cleanup).await).await;

    // The class goes; its unclaimed PV with it.
    classes
        .as_array_mut()
        .unwrap()
        .retain(|c| c["name"] != CLASS);
    set_classes(&env, classes).await.unwrap();
    wait(
        "the raw class's PVs to be deleted",
        OBJECT_TIMEOUT,
        || async { Ok(class_pvs(&env).await?.is_empty().then_some(())) },
    )
    .await
    .unwrap();
}

async fn set_classes(env: &Env, classes: serde_json::Value) -> Res<()> {
    let patch = json!({"spec": {"storage": {"deviceClasses": classes}}});
    env.clusters()
        .patch(CLUSTER_NAME, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
        .map_err(|e| format!("updating the LVMCluster's device classes: {e}"))
}

async fn class_pvs(env: &Env) -> Res<Vec<PersistentVolume>> {
    let pvs: Api<PersistentVolume> = Api::all(env.client.clone());
    Ok(pvs
        .list(&ListParams::default().labels(&format!("{CLASS_LABEL}={CLASS}")))
        .await
        .map_err(s)?
        .items)
}

/// The class's one PV once it is Available: (name, uid).
async fn available_pv(env: &Env, not_uid: Option<&str>) -> Res<(String, String)> {
    wait(
        "the raw disk's PV to be Available",
        CLEANUP_TIMEOUT,
        || async {
            Ok(class_pvs(env).await?.into_iter().find_map(|pv| {
                let phase = pv.status.as_ref().and_then(|s| s.phase.clone());
                let uid = pv.uid().unwrap_or_default();
                (phase.as_deref() == Some("Available") && Some(uid.as_str()) != not_uid)
                    .then(|| (pv.name_any(), uid))
            }))
        },
    )
    .await
}

async fn body(env: &Env, cleanup: &mut Cleanup) -> Res<()> {
    let (name, uid) = available_pv(env, None).await?;
    let pvs: Api<PersistentVolume> = Api::all(env.client.clone());
    let pv = pvs.get(&name).await.map_err(s)?;
    let spec = pv.spec.clone().unwrap_or_default();
    if !name.starts_with("local-") || spec.storage_class_name.as_deref() != Some("lvms-raw-e2e") {
        return Err(format!("unexpected PV {name}: {spec:?}"));
    }
    if spec.persistent_volume_reclaim_policy.as_deref() != Some("Retain") {
        return Err(format!("PV {name} is not Retain: {spec:?}"));
    }

    // A tenant claims the disk and writes to it.
    let claim = unique("raw");
    cleanup
        .create(
            env,
            pvc(&claim, &env.namespace, "lvms-raw-e2e", "1Mi", true, None),
        )
        .await?;
    env.run_pod(
        cleanup,
        &unique("raw-writer"),
        &claim,
        true,
        &write_script(true, PATTERN),
    )
    .await?;
    let bound: PersistentVolumeClaim = env
        .api::<PersistentVolumeClaim>()
        .get(&claim)
        .await
        .map_err(s)?;
    let volume = bound.spec.and_then(|s| s.volume_name).unwrap_or_default();
    if volume != name {
        return Err(format!(
            "claim {claim} bound {volume:?}, not the raw disk's PV {name}"
        ));
    }

    // The claim goes: the node cleans the disk and offers it again, a new PV of the same name.
    delete_and_wait(&env.api::<PersistentVolumeClaim>(), &claim, OBJECT_TIMEOUT).await?;
    let (again, new_uid) = available_pv(env, Some(&uid)).await?;
    if again != name || new_uid == uid {
        return Err(format!("expected a new PV {name}, got {again} ({new_uid})"));
    }

    // The next tenant reads no trace of the first.
    let claim2 = unique("raw");
    cleanup
        .create(
            env,
            pvc(&claim2, &env.namespace, "lvms-raw-e2e", "1Mi", true, None),
        )
        .await?;
    let read = env
        .run_pod(
            cleanup,
            &unique("raw-reader"),
            &claim2,
            true,
            &read_script(true, PATTERN.len()),
        )
        .await?;
    if read.contains(PATTERN) || read.bytes().any(|b| b != 0) {
        return Err(format!("the cleaned disk still holds data: {read:?}"));
    }
    Ok(())
}
