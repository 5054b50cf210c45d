//! Offline checks of images/*.Dockerfile (no container engine needed): multi-stage builds with
//! `--locked`, binaries where the operator's manifests run them, a non-root operator, and a
//! vg-manager runtime stage that installs every program the node agent runs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// One build stage: its base image and its instructions (continuation lines joined, comments
/// dropped).
#[derive(Debug)]
struct Stage {
    from: String,
    instructions: Vec<(String, String)>,
}

fn parse(dockerfile: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut cur = String::new();
    for line in dockerfile.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        if let Some(body) = t.strip_suffix('\\') {
            cur.push_str(body);
            cur.push(' ');
        } else {
            cur.push_str(t);
            logical.push(std::mem::take(&mut cur));
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for l in logical {
        let (ins, rest) = l.split_once(char::is_whitespace).unwrap_or((&l, ""));
        let ins = ins.to_ascii_uppercase();
        let rest = rest.trim().to_string();
        if ins == "FROM" {
            stages.push(Stage {
                from: rest.split_whitespace().next().unwrap_or_default().into(),
                instructions: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .expect("instruction before FROM")
                .instructions
                .push((ins, rest));
        }
    }
    stages
}

fn all(stage: &Stage, ins: &str) -> Vec<String> {
    stage
        .instructions
        .iter()
        .filter(|(i, _)| i == ins)
        .map(|(_, r)| r.clone())
        .collect()
}

/// The packages of every `apt-get install` in the stage.
fn apt_packages(stage: &Stage) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for run in all(stage, "RUN") {
        for cmd in run.split("&&") {
            let words: Vec<&str> = cmd.split_whitespace().collect();
            if let Some(i) = words.iter().position(|w| *w == "install")
                && words[..i].contains(&"apt-get")
            {
                out.extend(
                    words[i + 1..]
                        .iter()
                        .filter(|w| !w.starts_with('-'))
                        .map(|w| w.to_string()),
                );
            }
        }
    }
    out
}

/// The program each runner call names: the first string literal after `.run(` in the sources
/// of `dir`, the `mkfs.*` programs (chosen by filesystem, then run through a variable) and
/// nsenter (the host-namespace runner's prefix).
fn programs_run(dir: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root().join(dir)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs")
                && !p.ends_with("tests.rs")
                && !p
                    .strip_prefix(root())
                    .unwrap()
                    .components()
                    .any(|c| c.as_os_str() == "tests")
            {
                let src = std::fs::read_to_string(&p).unwrap();
                // Production code only: unit tests run fake programs (printf, sh, ...).
                let src = src.split("#[cfg(test)]").next().unwrap_or_default();
                for (i, _) in src.match_indices(".run(") {
                    let after = &src[i + 5..];
                    let after = after.trim_start();
                    let after = after.strip_prefix("if ").unwrap_or(after);
                    // `.run("prog", ...)`, or `.run(if dir { "a" } else { "b" }, ...)`.
                    let head: String = after.chars().take(60).collect();
                    let head = head.split(',').next().unwrap_or_default();
                    for lit in head.split('"').skip(1).step_by(2) {
                        if !lit.is_empty()
                            && lit.chars().all(|c| {
                                c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-'
                            })
                        {
                            out.insert(lit.to_string());
                        }
                    }
                }
                // Programs chosen first and run through a variable (`runner.run(prog, ...)`).
                // Found by their opening quote, not by quote parity: a char literal '"' elsewhere
                // in the file (an option parser's) would shift every pairing.
                for (i, _) in src.match_indices("\"mkfs.") {
                    let lit: String = src[i + 1..].chars().take_while(|c| *c != '"').collect();
                    if !lit.contains(' ') {
                        out.insert(lit);
                    }
                }
                if src.contains("\"nsenter\"") {
                    out.insert("nsenter".into());
                }
            }
        }
    }
    out
}

/// Which bookworm package ships each program (`dpkg -S` on Debian 12).
fn package_of(program: &str) -> Option<&'static str> {
    Some(match program {
        "lvm" => "lvm2",
        "dmsetup" => "dmsetup",
        "lsblk" | "blkid" | "wipefs" | "nsenter" | "blkdiscard" => "util-linux",
        "mount" | "umount" | "losetup" => "mount",
        "mkfs.xfs" | "xfs_growfs" | "xfs_info" => "xfsprogs",
        "mkfs.ext4" | "resize2fs" | "dumpe2fs" => "e2fsprogs",
        "udevadm" => "udev",
        "modprobe" => "kmod",
        "cryptsetup" => "cryptsetup-bin",
        "df" | "stat" | "realpath" | "mkdir" | "touch" | "rm" | "rmdir" => "coreutils",
        _ => return None,
    })
}

/// The Debian package that ships `program` on this machine (Debian bookworm, like the image), by
/// `dpkg -S`. dpkg knows the pre-usr-merge paths (/sbin/lvm), so every directory is tried.
fn dpkg_owner(program: &str) -> Option<String> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .find_map(|dir| {
            let out = Command::new("dpkg")
                .args(["-S", &format!("{dir}/{program}")])
                .output()
                .ok()?;
            out.status.success().then(|| {
                let line = String::from_utf8_lossy(&out.stdout).into_owned();
                line.split(':').next().unwrap_or("").trim().to_string()
            })
        })
}

#[test]
fn package_table_is_what_bookworm_ships() {
    // Not a copy of the table: dpkg on this bookworm machine (the test setup installs lvm2,
    // xfsprogs, e2fsprogs, udev) says which package each program comes from.
    let mut programs = programs_run("lvm/src");
    programs.extend(programs_run("vg-manager/src"));
    programs.insert("thin_check".into());
    for p in &programs {
        let owner = dpkg_owner(p).unwrap_or_else(|| {
            panic!("{p} is not installed here; run hack/setup.sh (tests/vm/setup.sh installs it)")
        });
        let want = if p == "thin_check" {
            "thin-provisioning-tools"
        } else {
            package_of(p).unwrap_or_else(|| panic!("no package for {p}"))
        };
        assert_eq!(owner, want, "{p}");
    }
}

fn check_builder(stages: &[Stage], package: &str) {
    assert!(stages.len() >= 2, "multi-stage: {stages:?}");
    let builder = &stages[0];
    assert!(
        builder.from.contains("rust:") && builder.from.contains("bookworm"),
        "builder {}",
        builder.from
    );
    assert!(
        apt_packages(builder).contains("protobuf-compiler"),
        "the csi crate needs protoc"
    );
    let builds: Vec<String> = all(builder, "RUN")
        .into_iter()
        .filter(|r| r.contains("cargo build"))
        .collect();
    assert_eq!(builds.len(), 1, "{builds:?}");
    for flag in ["--release", "--locked", &format!("-p {package}")] {
        assert!(builds[0].contains(flag), "`{}` lacks {flag}", builds[0]);
    }
}

fn check_runtime_binary(runtime: &Stage, binary: &str) {
    let copies = all(runtime, "COPY");
    assert!(
        copies
            .iter()
            .any(|c| c.starts_with("--from=") && c.ends_with(&format!("/usr/bin/{binary}"))),
        "{binary} is not copied from the builder to /usr/bin: {copies:?}"
    );
    assert_eq!(
        all(runtime, "ENTRYPOINT"),
        [format!("[\"/usr/bin/{binary}\"]")]
    );
}

#[test]
fn operator_image_is_multi_stage_locked_and_non_root() {
    let stages = parse(&read("images/lvms-operator.Dockerfile"));
    check_builder(&stages, "lvms-operator");
    let runtime = stages.last().unwrap();
    assert!(
        runtime.from.starts_with("gcr.io/distroless/cc-debian12"),
        "{}",
        runtime.from
    );
    check_runtime_binary(runtime, "lvms-operator");
    let user = all(runtime, "USER");
    assert_eq!(user.len(), 1, "{user:?}");
    let uid = user[0].split(':').next().unwrap();
    assert!(uid != "0" && uid != "root", "operator runs as {uid}");
    assert_eq!(uid, "65532");
}

#[test]
fn vg_manager_image_installs_every_program_the_agent_runs() {
    let stages = parse(&read("images/vg-manager.Dockerfile"));
    check_builder(&stages, "vg-manager");
    let runtime = stages.last().unwrap();
    assert_eq!(runtime.from, "docker.io/library/debian:bookworm-slim");
    check_runtime_binary(runtime, "vg-manager");

    let installed = apt_packages(runtime);
    let mut programs = programs_run("lvm/src");
    programs.extend(programs_run("vg-manager/src"));
    // The scan must find the runner's programs at all, or it proves nothing.
    for p in [
        "lvm", "lsblk", "wipefs", "mount", "losetup", "mkfs.xfs", "nsenter",
    ] {
        assert!(programs.contains(p), "scan missed {p}: {programs:?}");
    }
    for p in &programs {
        let pkg = package_of(p).unwrap_or_else(|| {
            panic!("the agent runs {p}: add its bookworm package to package_of and the image")
        });
        assert!(
            installed.contains(pkg),
            "the agent runs {p} ({pkg}) but the image installs only {installed:?}"
        );
    }
    // lvm2 runs thin_check/thin_repair on thin pools.
    assert!(installed.contains("thin-provisioning-tools"));
    // kube's rustls client refuses to start without system roots (found by vm_image).
    assert!(installed.contains("ca-certificates"));
    // lvm2 runs /sbin/modprobe for device-mapper targets not yet loaded (found by vm_image).
    assert!(installed.contains("kmod"));

    let runs = all(runtime, "RUN").join(" ");
    assert!(runs.contains("--no-install-recommends"));
    assert!(runs.contains("rm -rf /var/lib/apt/lists/*"));
    // LVM in a container: udev is decided per node by vg-manager (lvm::container), so nothing
    // in the image may force it off for every node.
    assert!(
        !all(runtime, "ENV")
            .iter()
            .any(|e| e.contains("DM_DISABLE_UDEV")),
        "DM_DISABLE_UDEV makes lvm create /dev nodes itself, racing the host's udevd"
    );
    assert!(
        all(runtime, "COPY")
            .iter()
            .any(|c| c == "images/lvm.conf /etc/lvm/lvm.conf")
    );
    // The agent runs as root (privileged DaemonSet); the image must not force another user.
    assert!(all(runtime, "USER").is_empty());
}

#[test]
fn lvm_conf_turns_off_udev_and_monitoring() {
    let conf = read("images/lvm.conf");
    let settings: BTreeSet<String> = conf
        .lines()
        .map(|l| l.split('#').next().unwrap().trim().replace(' ', ""))
        .filter(|l| l.contains('='))
        .collect();
    for s in [
        "udev_sync=0",
        "udev_rules=0",
        "monitoring=0",
        "obtain_device_list_from_udev=0",
    ] {
        assert!(settings.contains(s), "{s} missing: {settings:?}");
    }
    // lvmetad is gone from lvm2 2.03 (bookworm): its setting would only draw a warning.
    assert!(!settings.iter().any(|s| s.contains("lvmetad")));
}

#[test]
fn dockerignore_keeps_the_workspace_and_drops_build_output() {
    let ignore = read(".dockerignore");
    let rules: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(rules.contains(&"target/"));
    assert!(rules.contains(&".git/"));
    // cargo reads every member's manifest even when it builds one package.
    let manifest = read("Cargo.toml");
    let members = manifest
        .split("members = [")
        .nth(1)
        .and_then(|m| m.split(']').next())
        .unwrap();
    for m in members.split(',').map(|m| m.trim().trim_matches('"')) {
        assert!(
            !rules
                .iter()
                .any(|r| r.trim_end_matches('/') == m || m.starts_with(&format!("{r}/"))),
            "member {m} is ignored"
        );
    }
}

#[test]
fn makefile_builds_both_images() {
    let mk = read("Makefile");
    assert!(
        mk.lines()
            .any(|l| l.starts_with("images:") && l.contains(" ## ")),
        "images target with help text"
    );
    assert!(
        mk.lines()
            .any(|l| l.starts_with(".PHONY:") && l.split_whitespace().any(|w| w == "images"))
    );
    assert!(mk.contains("-f images/lvms-operator.Dockerfile -t $(IMG_OPERATOR)"));
    assert!(mk.contains("-f images/vg-manager.Dockerfile -t $(IMG_VG_MANAGER)"));
}

#[test]
fn parser_joins_continuations_and_splits_stages() {
    let s = parse(
        "FROM a AS b\n# c\nRUN apt-get update \\\n  && apt-get install -y --x p q\nFROM d\nUSER 1\n",
    );
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].from, "a");
    assert_eq!(
        apt_packages(&s[0]),
        BTreeSet::from(["p".to_string(), "q".to_string()])
    );
    assert_eq!(all(&s[1], "USER"), ["1"]);
}
