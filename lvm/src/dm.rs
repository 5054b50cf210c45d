//! Whether the kernel can run a device-mapper target. lvm2 loads a missing target module itself
//! and, when it cannot, fails with an error about the table; we ask first, so a node without
//! dm-raid reports that plainly instead of an lvcreate failure.

use crate::runner::Runner;

/// The target names `dmsetup targets` lists (`raid  v1.15.1` → `raid`).
pub fn targets(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

/// Ok when the `raid` target is registered, after loading dm-raid if it was not. Otherwise the
/// reason, worded for the node's status.
pub fn raid_available(runner: &dyn Runner) -> Result<(), String> {
    target_available(runner, "raid", "dm-raid", "RAID device classes need it")
}

/// Ok when the `crypt` target is registered, after loading dm-crypt if it was not: encrypted
/// volumes need it on the node that publishes them.
pub fn crypt_available(runner: &dyn Runner) -> Result<(), String> {
    target_available(
        runner,
        "crypt",
        "dm-crypt",
        "encrypted (LUKS2) volumes need it",
    )
}

fn target_available(
    runner: &dyn Runner,
    target: &str,
    module: &str,
    needed_by: &str,
) -> Result<(), String> {
    let listed = |runner: &dyn Runner| {
        runner
            .run("dmsetup", &["targets".to_string()])
            .map(|o| targets(&o.stdout).contains(&target))
    };
    match listed(runner) {
        Ok(true) => return Ok(()),
        Ok(false) => {}
        Err(e) => return Err(format!("cannot list the device-mapper targets: {e}")),
    }
    // Built as a module on most distributions and loaded on first use.
    let loaded = runner.run("modprobe", &[module.to_string()]);
    if listed(runner).unwrap_or(false) {
        return Ok(());
    }
    let why = match loaded {
        Err(e) => format!(" (modprobe {module}: {e})"),
        Ok(_) => String::new(),
    };
    Err(format!(
        "the {module} kernel module is not available on this node{why}: {needed_by}; install the kernel's {module} module or load it on the host (`modprobe {module}`)"
    ))
}

/// Whether the kernel can discard the block device at `path` (a symlink such as /dev/vg/lv is
/// followed to its dm-N): its queue's `discard_max_bytes` is not 0.
pub fn can_discard(path: &str) -> bool {
    let Ok(real) = std::fs::canonicalize(path) else {
        return false;
    };
    let Some(name) = real.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return false;
    };
    std::fs::read_to_string(format!("/sys/class/block/{name}/queue/discard_max_bytes"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::runner::Output;
    use std::sync::Mutex;

    /// Answers `dmsetup targets` from a list that `modprobe` may extend.
    struct Kernel {
        targets: Mutex<Vec<&'static str>>,
        /// What modprobe registers, if it can.
        loadable: Option<&'static str>,
    }

    impl Runner for Kernel {
        fn run(&self, program: &str, _: &[String]) -> Result<Output, Error> {
            match program {
                "dmsetup" => Ok(Output {
                    stdout: self
                        .targets
                        .lock()
                        .unwrap()
                        .iter()
                        .map(|t| format!("{t:<16} v1.0.0\n"))
                        .collect(),
                    stderr: String::new(),
                }),
                "modprobe" if self.loadable.is_some() => {
                    self.targets.lock().unwrap().extend(self.loadable);
                    Ok(Output {
                        stdout: String::new(),
                        stderr: String::new(),
                    })
                }
                _ => Err(Error::Command {
                    command: program.into(),
                    code: Some(1),
                    stderr: "modprobe: FATAL: Module dm-raid not found".into(),
                }),
            }
        }
    }

    #[test]
    fn raid_is_found_loaded_or_reported() {
        let k = |t: Vec<&'static str>, loadable| Kernel {
            targets: Mutex::new(t),
            loadable,
        };
        assert_eq!(raid_available(&k(vec!["striped", "raid"], None)), Ok(()));
        assert_eq!(raid_available(&k(vec!["striped"], Some("raid"))), Ok(()));
        let e = raid_available(&k(vec!["striped", "thin-pool"], None)).unwrap_err();
        assert!(
            e.starts_with("the dm-raid kernel module is not available on this node")
                && e.contains("Module dm-raid not found"),
            "{e}"
        );
        // Loading another module does not make the target appear.
        assert!(raid_available(&k(vec!["striped"], Some("crypt"))).is_err());
    }

    #[test]
    fn crypt_is_found_loaded_or_reported() {
        let k = |t: Vec<&'static str>, loadable| Kernel {
            targets: Mutex::new(t),
            loadable,
        };
        assert_eq!(crypt_available(&k(vec!["crypt"], None)), Ok(()));
        assert_eq!(crypt_available(&k(vec!["linear"], Some("crypt"))), Ok(()));
        let e = crypt_available(&k(vec!["linear", "raid"], None)).unwrap_err();
        assert!(
            e.starts_with("the dm-crypt kernel module is not available on this node")
                && e.contains("LUKS2"),
            "{e}"
        );
    }
}
