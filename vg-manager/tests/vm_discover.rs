//! `vg-manager discover` on real devices in the guest: the binary a user runs, its text and JSON.

use std::process::Command;

use vm_test::Disk;

fn discover(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_vg-manager"))
        .arg("discover")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn discover_reports_every_device_with_reasons() {
    let Some(_) = vm_test::guest(
        "discover_reports_every_device_with_reasons",
        &[
            Disk::Blank("512M"),
            Disk::Blank("512M"),
            Disk::ReadOnly("64M"),
        ],
    ) else {
        return;
    };
    assert!(
        Command::new("mkfs.ext4")
            .args(["-q", "/dev/vdb"])
            .status()
            .unwrap()
            .success()
    );
    assert!(
        Command::new("udevadm")
            .arg("settle")
            .status()
            .unwrap()
            .success()
    );

    let text = discover(&[]);
    let line = |dev: &str| {
        text.lines()
            .find(|l| l.starts_with(dev))
            .unwrap_or_else(|| panic!("{dev} missing:\n{text}"))
            .to_string()
    };
    assert!(line("/dev/vda ").ends_with("eligible"), "{text}");
    assert!(
        line("/dev/vdb ").contains("excluded: has a filesystem signature (ext4)"),
        "{text}"
    );
    assert!(line("/dev/vdc ").contains("read-only"), "{text}");

    // Selecting by symlink: everything else is "not in the device selector".
    let json: serde_json::Value =
        serde_json::from_str(&discover(&["--json", "/dev/disk/by-id/virtio-lvmsvm0"])).unwrap();
    let by = |dev: &str| {
        json.as_array()
            .unwrap()
            .iter()
            .find(|e| e["device"] == dev)
            .cloned()
            .unwrap()
    };
    assert_eq!(by("/dev/vda")["verdict"], "eligible");
    assert_eq!(by("/dev/vdb")["reasons"][0], "not in the device selector");
    assert_eq!(by("/dev/vda")["size_bytes"], 512 * 1024 * 1024);
}
