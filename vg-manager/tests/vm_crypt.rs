//! Per-volume LUKS2 encryption on real LVM and dm-crypt in the guest, through the whole driver
//! (`vg-manager run` and the CSI controller over their sockets, the API doubled in-process): the
//! key comes in NodePublishVolume's secrets as kubelet passes a node-publish Secret; data comes
//! back after an unpublish with the key, a wrong or missing key is refused with the data intact,
//! the raw LV holds a LUKS2 header and no plaintext, the mapping is closed by the last unpublish,
//! online expansion grows the mapping and the filesystem, a snapshot stays encrypted with its
//! source's key, and nothing with data on it is ever formatted.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use api_double::ApiDouble;
use csi::encryption::{ENCRYPTION_KEY, LUKS2};
use csi::pb;
use csi::pb::controller_client::ControllerClient;
use csi::pb::node_client::NodeClient;
use tonic::Code;
use tonic::transport::Channel;
use vm_test::Disk;

mod support;

use support::{MIB, capability, capacity, channel, create_request, eventually, provision, sh};

const KEY: &str = "correct horse battery staple 2b7e1516";
/// Written by the tests; must never be found on the raw LV.
const PLAINTEXT: &str = "plaintext-marker-4f1c9a: tenant data that must stay encrypted";

fn secrets(key: &str) -> HashMap<String, String> {
    HashMap::from([("key".to_string(), key.to_string())])
}

fn encrypted(name: &str, bytes: i64, fs: Option<&str>) -> pb::CreateVolumeRequest {
    let mut req = create_request(name, "vg1", bytes, fs);
    req.parameters.insert(ENCRYPTION_KEY.into(), LUKS2.into());
    req
}

fn publish_request(
    v: &pb::Volume,
    target: &Path,
    fs: Option<&str>,
    secrets: HashMap<String, String>,
) -> pb::NodePublishVolumeRequest {
    pb::NodePublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        target_path: target.to_string_lossy().into(),
        volume_capability: Some(capability(fs)),
        // As kubelet sends it: the PV's volumeAttributes and the Secret's entries.
        volume_context: v.volume_context.clone(),
        secrets,
        ..Default::default()
    }
}

async fn unpublish(node: &mut NodeClient<Channel>, id: &str, target: &Path) {
    node.node_unpublish_volume(pb::NodeUnpublishVolumeRequest {
        volume_id: id.into(),
        target_path: target.to_string_lossy().into(),
    })
    .await
    .unwrap();
}

fn mapping_open(id: &str) -> bool {
    Path::new(&format!("/dev/mapper/lvms-crypt-{id}")).exists()
}

/// Whether the raw LV's bytes contain `needle` anywhere.
fn raw_contains(lv: &str, needle: &str) -> bool {
    let raw = std::fs::read(lv).unwrap();
    raw.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn luks2_volumes_on_real_dm_crypt() {
    let Some(_) = vm_test::guest("luks2_volumes_on_real_dm_crypt", &[Disk::Blank("2G")]) else {
        return;
    };
    let api = ApiDouble::new();
    let support::Driver {
        dir,
        node_sock,
        ctrl_sock,
        ..
    } = support::start_thin_driver(&api, "crypt", 90, Duration::from_secs(30));
    eventually("the thin pool's capacity", 180, || capacity(&api, "vg1")).await;
    let mut ctrl = ControllerClient::new(channel(&ctrl_sock).await);
    let mut node = NodeClient::new(channel(&node_sock).await);

    // A typo in the StorageClass parameter is refused at CreateVolume, naming it.
    let mut bad = encrypted("pvc-typo", 64 * MIB, Some("xfs"));
    bad.parameters.insert(ENCRYPTION_KEY.into(), "luks".into());
    let e = ctrl
        .create_volume(bad)
        .await
        .expect_err("luks is not luks2");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message()
            .contains("parameters[lvms.topolvm.io/encryption]"),
        "{}",
        e.message()
    );

    // The smallest encrypted xfs volume holds xfs's 300 MB inside the 16 MiB header.
    let small = provision(&mut ctrl, encrypted("pvc-small", 64 * MIB, Some("xfs"))).await;
    assert_eq!(small.capacity_bytes, 316 * MIB);

    // A filesystem volume: LUKS2 written and opened on first publish, then xfs inside.
    let v = provision(&mut ctrl, encrypted("pvc-fs", 320 * MIB, Some("xfs"))).await;
    assert_eq!(v.volume_context[ENCRYPTION_KEY], LUKS2);
    let lv = format!("/dev/vg1/{}", v.volume_id);
    let a = dir.join("pods/a");
    let t = Instant::now();
    node.node_publish_volume(publish_request(&v, &a, Some("xfs"), secrets(KEY)))
        .await
        .unwrap();
    println!(
        "first publish (luksFormat, open, mkfs.xfs, mount): {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert!(mapping_open(&v.volume_id));
    sh(&["cryptsetup", "isLuks", "--type", "luks2", &lv]);
    let dump = sh(&["cryptsetup", "luksDump", &lv]);
    assert!(
        dump.contains("Version:       \t2") || dump.contains("Version:"),
        "{dump}"
    );
    assert!(dump.contains("argon2id"), "{dump}");
    std::fs::write(a.join("data"), PLAINTEXT).unwrap();
    // Idempotent: the same publish again is a success and changes nothing.
    node.node_publish_volume(publish_request(&v, &a, Some("xfs"), secrets(KEY)))
        .await
        .unwrap();
    unpublish(&mut node, &v.volume_id, &a).await;
    assert!(
        !mapping_open(&v.volume_id),
        "the last unpublish closes the mapping"
    );
    assert!(
        !raw_contains(&lv, PLAINTEXT),
        "the raw LV holds no plaintext"
    );
    // The LUKS2 magic at the start, and where the data begins (after the 16 MiB header) not
    // even the filesystem's magic.
    let raw = std::fs::read(&lv).unwrap();
    assert_eq!(&raw[..6], b"LUKS\xba\xbe");
    assert_ne!(&raw[16 << 20..(16 << 20) + 4], b"XFSB");
    drop(raw);

    // A wrong key is refused, with a reason, and nothing is formatted or opened.
    let b = dir.join("pods/b");
    let t = Instant::now();
    let e = node
        .node_publish_volume(publish_request(&v, &b, Some("xfs"), secrets("not the key")))
        .await
        .expect_err("a wrong key opens nothing");
    println!(
        "wrong key refused in {:.2} s: {}",
        t.elapsed().as_secs_f64(),
        e.message()
    );
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    assert!(
        e.message().contains("does not open its LUKS2 header"),
        "{}",
        e.message()
    );
    assert!(!mapping_open(&v.volume_id));
    // No key at all: the reason says which StorageClass parameters bring it.
    let e = node
        .node_publish_volume(publish_request(&v, &b, Some("xfs"), HashMap::new()))
        .await
        .expect_err("no key");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("node-publish-secret-name"),
        "{}",
        e.message()
    );
    // The key, at last: the data is back.
    node.node_publish_volume(publish_request(&v, &b, Some("xfs"), secrets(KEY)))
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(b.join("data")).unwrap(), PLAINTEXT);

    // A second publish on the node shares the mapping; its key is checked all the same, and
    // the mapping stays open until the last target goes.
    let b2 = dir.join("pods/b2");
    let e = node
        .node_publish_volume(publish_request(&v, &b2, Some("xfs"), secrets("wrong")))
        .await
        .expect_err("an open mapping does not excuse a wrong key");
    assert_eq!(e.code(), Code::PermissionDenied);
    node.node_publish_volume(publish_request(&v, &b2, Some("xfs"), secrets(KEY)))
        .await
        .unwrap();
    unpublish(&mut node, &v.volume_id, &b2).await;
    assert!(
        mapping_open(&v.volume_id),
        "still published at {}",
        b.display()
    );

    // Online expansion: the LV, then the mapping and the filesystem.
    let df = |p: &Path| -> u64 {
        let out = sh(&["df", "-B1", "--output=size", &p.to_string_lossy()]);
        out.lines().nth(1).unwrap().trim().parse().unwrap()
    };
    let before = df(&b);
    ctrl.controller_expand_volume(pb::ControllerExpandVolumeRequest {
        volume_id: v.volume_id.clone(),
        capacity_range: Some(pb::CapacityRange {
            required_bytes: 576 * MIB,
            limit_bytes: 0,
        }),
        volume_capability: Some(capability(Some("xfs"))),
        ..Default::default()
    })
    .await
    .unwrap();
    node.node_expand_volume(pb::NodeExpandVolumeRequest {
        volume_id: v.volume_id.clone(),
        volume_path: b.to_string_lossy().into(),
        volume_capability: Some(capability(Some("xfs"))),
        ..Default::default()
    })
    .await
    .unwrap();
    let after = df(&b);
    assert!(
        after >= before + 240 * MIB as u64,
        "the filesystem in the mapping grew by the 256 MiB: {before} → {after}"
    );
    let status = sh(&[
        "cryptsetup",
        "status",
        &format!("lvms-crypt-{}", v.volume_id),
    ]);
    let mapping = lvm::crypt::parse_status(&status).unwrap();
    assert_eq!(mapping.offset + mapping.size, 576 * MIB as u64, "{status}");

    // A snapshot of an encrypted volume is encrypted with its source's key.
    std::process::Command::new("sync").status().unwrap();
    let s = ctrl
        .create_snapshot(pb::CreateSnapshotRequest {
            source_volume_id: v.volume_id.clone(),
            name: "snap-crypt".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    let from_snapshot = |name: &str, encrypt: bool| {
        let mut req = if encrypt {
            encrypted(name, 576 * MIB, Some("xfs"))
        } else {
            create_request(name, "vg1", 576 * MIB, Some("xfs"))
        };
        req.volume_content_source = Some(pb::VolumeContentSource {
            r#type: Some(pb::volume_content_source::Type::Snapshot(
                pb::volume_content_source::SnapshotSource {
                    snapshot_id: s.snapshot_id.clone(),
                },
            )),
        });
        req
    };
    let restored = provision(&mut ctrl, from_snapshot("pvc-restored", true)).await;
    let c = dir.join("pods/c");
    let e = node
        .node_publish_volume(publish_request(
            &restored,
            &c,
            Some("xfs"),
            secrets("another key"),
        ))
        .await
        .expect_err("a restore keeps its source's key");
    assert_eq!(e.code(), Code::PermissionDenied);
    node.node_publish_volume(publish_request(&restored, &c, Some("xfs"), secrets(KEY)))
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(c.join("data")).unwrap(), PLAINTEXT);
    unpublish(&mut node, &restored.volume_id, &c).await;
    // Restored into a class without encryption: refused, not mounted as garbage nor formatted.
    let plain = provision(&mut ctrl, from_snapshot("pvc-plain-restore", false)).await;
    let e = node
        .node_publish_volume(publish_request(&plain, &c, Some("xfs"), HashMap::new()))
        .await
        .expect_err("a LUKS volume without the encryption parameter");
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("holds a LUKS header"),
        "{}",
        e.message()
    );
    sh(&[
        "cryptsetup",
        "isLuks",
        &format!("/dev/vg1/{}", plain.volume_id),
    ]);

    // A plain volume with data is never formatted by a publish that asks for encryption.
    let p = provision(
        &mut ctrl,
        create_request("pvc-plain", "vg1", 64 * MIB, Some("xfs")),
    )
    .await;
    let d = dir.join("pods/d");
    node.node_publish_volume(publish_request(&p, &d, Some("xfs"), HashMap::new()))
        .await
        .unwrap();
    std::fs::write(d.join("data"), "plain data").unwrap();
    unpublish(&mut node, &p.volume_id, &d).await;
    let mut asks = p.clone();
    asks.volume_context
        .insert(ENCRYPTION_KEY.into(), LUKS2.into());
    let e = node
        .node_publish_volume(publish_request(&asks, &d, Some("xfs"), secrets(KEY)))
        .await
        .expect_err("data on a volume to be encrypted");
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("refusing to format over it"),
        "{}",
        e.message()
    );
    node.node_publish_volume(publish_request(&p, &d, Some("xfs"), HashMap::new()))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(d.join("data")).unwrap(),
        "plain data"
    );
    unpublish(&mut node, &p.volume_id, &d).await;

    // A block volume: the pod sees the decrypted device; the LV only ciphertext.
    let blk = provision(&mut ctrl, encrypted("pvc-block", 64 * MIB, None)).await;
    let blv = format!("/dev/vg1/{}", blk.volume_id);
    let f = dir.join("pods/dev-e");
    node.node_publish_volume(publish_request(&blk, &f, None, secrets(KEY)))
        .await
        .unwrap();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut dev = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
        dev.seek(SeekFrom::Start(4 * MIB as u64)).unwrap();
        dev.write_all(PLAINTEXT.as_bytes()).unwrap();
        dev.sync_all().unwrap();
    }
    unpublish(&mut node, &blk.volume_id, &f).await;
    assert!(!mapping_open(&blk.volume_id));
    assert!(
        !raw_contains(&blv, PLAINTEXT),
        "the raw block LV holds no plaintext"
    );
    node.node_publish_volume(publish_request(&blk, &f, None, secrets(KEY)))
        .await
        .unwrap();
    let back = std::fs::read(&f).unwrap();
    let at = 4 * MIB as usize;
    assert_eq!(&back[at..at + PLAINTEXT.len()], PLAINTEXT.as_bytes());
    unpublish(&mut node, &blk.volume_id, &f).await;

    // Deleting an encrypted volume works once it is unpublished (its mapping is closed).
    unpublish(&mut node, &v.volume_id, &b).await;
    assert!(!mapping_open(&v.volume_id));
    for id in [
        &small.volume_id,
        &restored.volume_id,
        &plain.volume_id,
        &blk.volume_id,
    ] {
        ctrl.delete_volume(pb::DeleteVolumeRequest {
            volume_id: id.to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
}
