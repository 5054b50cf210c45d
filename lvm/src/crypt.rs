//! LUKS2 over a logical volume, through cryptsetup: format on first use, open (map) and close,
//! test a key, resize the mapping after the LV grew. The key only ever travels on cryptsetup's
//! standard input (`--key-file -`): never in argv (visible in /proc to every process on the
//! node), the environment, a file or a log line.

use crate::error::Error;
use crate::runner::Runner;

/// Longest key accepted. cryptsetup reads key files of up to 8 MiB, but a Secret's key is a
/// passphrase or random bytes; anything longer is a mistake (a whole file in the wrong entry).
pub const MAX_KEY_BYTES: usize = 8192;

/// Memory of one argon2id key derivation, in KiB. cryptsetup's default takes up to 1 GiB
/// (a quarter of the node's RAM), per open, inside the agent's container: a node publishing
/// a few encrypted volumes at once would be OOM-killed. 64 MiB keeps argon2id's resistance to
/// GPU guessing while a dozen opens fit in a small agent.
const PBKDF_MEMORY_KIB: u32 = 65536;
/// Milliseconds each key derivation should take on the node: what a publish waits per open.
const ITER_TIME_MS: u32 = 1000;

/// Key material. Its Debug says nothing of the bytes, and they are overwritten when dropped.
pub struct Key(Vec<u8>);

impl Key {
    /// A key, refused when empty or longer than [`MAX_KEY_BYTES`] (the reason never quotes it).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, String> {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Err("the key is empty".into());
        }
        if bytes.len() > MAX_KEY_BYTES {
            return Err(format!(
                "the key is {} bytes, more than the {MAX_KEY_BYTES} accepted",
                bytes.len()
            ));
        }
        Ok(Self(bytes))
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(redacted)")
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        self.0.fill(0);
        // A write to memory about to be freed may be optimised away; black_box keeps it.
        std::hint::black_box(&self.0);
    }
}

/// The device-mapper name of volume `volume`'s decrypted mapping: one per LV, so every target
/// a volume is published to on the node shares it.
pub fn mapping_name(volume: &str) -> String {
    format!("lvms-crypt-{volume}")
}

/// `/dev/mapper/<name>`.
pub fn mapper_path(name: &str) -> String {
    format!("/dev/mapper/{name}")
}

/// An open mapping, from `cryptsetup status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The device it decrypts (`/dev/mapper/<vg>-<lv>` for an LV).
    pub device: String,
    /// Its size and where the data starts on the device (after the LUKS2 header), in bytes.
    pub size: u64,
    pub offset: u64,
}

/// Parses `cryptsetup status` of an active mapping (sizes are in 512-byte sectors).
pub fn parse_status(out: &str) -> Option<Mapping> {
    let field = |key: &str| {
        out.lines()
            .find_map(|l| l.trim_start().strip_prefix(key))
            .map(|v| v.trim().to_string())
    };
    let sectors = |key: &str| -> Option<u64> {
        field(key)?
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
            .map(|n| n * 512)
    };
    Some(Mapping {
        device: field("device:")?,
        size: sectors("size:")?,
        offset: sectors("offset:").unwrap_or(0),
    })
}

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// Whether `device` holds a LUKS2 header.
pub fn is_luks2(runner: &dyn Runner, device: &str) -> Result<bool, Error> {
    match runner.run("cryptsetup", &args(&["isLuks", "--type", "luks2", device])) {
        Ok(_) => Ok(true),
        // isLuks exits 1 for anything else (blank, a filesystem, LUKS1).
        Err(Error::Command { code: Some(1), .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes a LUKS2 header to `device` with `key` in its first key slot. Destroys what the
/// device holds: the caller checks it is blank first.
pub fn format(runner: &dyn Runner, device: &str, key: &Key) -> Result<(), Error> {
    let memory = PBKDF_MEMORY_KIB.to_string();
    let iter_time = ITER_TIME_MS.to_string();
    runner.run_with_input(
        "cryptsetup",
        &args(&[
            "luksFormat",
            "--batch-mode",
            "--type",
            "luks2",
            "--pbkdf",
            "argon2id",
            "--pbkdf-memory",
            &memory,
            "--pbkdf-parallel",
            "1",
            "--iter-time",
            &iter_time,
            "--key-file",
            "-",
            device,
        ]),
        key.bytes(),
    )?;
    Ok(())
}

/// Opens `device` as `/dev/mapper/<name>` with `key`. `--disable-keyring` keeps the volume key
/// in the dm-crypt table rather than the kernel keyring, so the mapping can later be resized
/// without asking for the key again (NodeExpandVolume brings no secret). `discards` passes the
/// filesystem's discards down: a thin volume needs them to give freed space back to its pool
/// (at the cost of showing which blocks are unused, which cryptsetup's man page describes).
pub fn open(
    runner: &dyn Runner,
    device: &str,
    name: &str,
    key: &Key,
    discards: bool,
) -> Result<(), Error> {
    let mut a = args(&["open", "--type", "luks2", "--disable-keyring"]);
    if discards {
        a.push("--allow-discards".into());
    }
    a.extend(args(&["--key-file", "-", device, name]));
    runner.run_with_input("cryptsetup", &a, key.bytes())?;
    Ok(())
}

/// Checks that `key` opens `device`'s header, without mapping anything.
pub fn test_key(runner: &dyn Runner, device: &str, key: &Key) -> Result<(), Error> {
    runner.run_with_input(
        "cryptsetup",
        &args(&[
            "open",
            "--test-passphrase",
            "--type",
            "luks2",
            "--key-file",
            "-",
            device,
        ]),
        key.bytes(),
    )?;
    Ok(())
}

/// Whether a failure of [`open`] or [`test_key`] means the key does not open the header.
pub fn is_wrong_key(e: &Error) -> bool {
    // cryptsetup's exit code 2 is "no permission (bad passphrase)".
    matches!(e, Error::Command { code: Some(2), stderr, .. } if stderr.contains("No key available"))
}

/// The open mapping `name`, or `None` when it is not active.
pub fn status(runner: &dyn Runner, name: &str) -> Result<Option<Mapping>, Error> {
    match runner.run("cryptsetup", &args(&["status", name])) {
        Ok(o) => parse_status(&o.stdout)
            .map(Some)
            .ok_or_else(|| Error::Parse {
                what: format!("cryptsetup status {name}"),
                message: format!("no device or size in {:?}", o.stdout),
            }),
        // Exit 4: "<name> is inactive".
        Err(Error::Command { code: Some(4), .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Closes mapping `name`; one that is not open is already closed.
pub fn close(runner: &dyn Runner, name: &str) -> Result<(), Error> {
    match runner.run("cryptsetup", &args(&["close", name])) {
        Ok(_) => Ok(()),
        Err(Error::Command { code: Some(4), .. }) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Grows mapping `name` to its device's size (after the LV grew).
pub fn resize(runner: &dyn Runner, name: &str) -> Result<(), Error> {
    runner.run("cryptsetup", &args(&["resize", name]))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::Output;
    use std::sync::Mutex;

    #[test]
    fn status_of_an_open_luks2_mapping() {
        // cryptsetup 2.6.1 on Debian 12.
        let out = "/dev/mapper/lvms-crypt-v1 is active and is in use.
  type:    LUKS2
  cipher:  aes-xts-plain64
  keysize: 512 bits
  key location: dm-crypt
  device:  /dev/mapper/vg1-v1
  sector size:  512
  offset:  32768 sectors
  size:    2064384 sectors
  mode:    read/write
";
        assert_eq!(
            parse_status(out),
            Some(Mapping {
                device: "/dev/mapper/vg1-v1".into(),
                size: 2064384 * 512,
                offset: 32768 * 512,
            })
        );
        assert_eq!(parse_status("/dev/mapper/x is inactive.\n"), None);
    }

    #[test]
    fn keys_are_bounded_and_never_shown() {
        assert!(Key::new(Vec::new()).is_err());
        assert!(Key::new(vec![7u8; MAX_KEY_BYTES + 1]).is_err());
        let k = Key::new(b"hunter2".to_vec()).unwrap();
        assert_eq!(format!("{k:?}"), "Key(redacted)");
        let e = Key::new(vec![b'x'; MAX_KEY_BYTES + 1]).unwrap_err();
        assert!(!e.contains("xxx"), "{e}");
    }

    /// Records argv and standard input; answers with a canned result.
    #[derive(Default)]
    struct Record {
        calls: Mutex<Vec<(Vec<String>, Vec<u8>)>>,
        fail: Option<(i32, &'static str)>,
    }

    impl Runner for Record {
        fn run(&self, program: &str, args: &[String]) -> Result<Output, Error> {
            self.run_with_input(program, args, b"")
        }
        fn run_with_input(
            &self,
            program: &str,
            args: &[String],
            input: &[u8],
        ) -> Result<Output, Error> {
            let mut argv = vec![program.to_string()];
            argv.extend(args.iter().cloned());
            self.calls.lock().unwrap().push((argv, input.to_vec()));
            match self.fail {
                Some((code, stderr)) => {
                    Err(Error::classify(program.into(), Some(code), stderr.into()))
                }
                None => Ok(Output::default()),
            }
        }
    }

    #[test]
    fn the_key_goes_to_standard_input_only() {
        let r = Record::default();
        let key = Key::new(b"k3y-bytes".to_vec()).unwrap();
        format(&r, "/dev/vg1/v1", &key).unwrap();
        open(&r, "/dev/vg1/v1", "lvms-crypt-v1", &key, true).unwrap();
        test_key(&r, "/dev/vg1/v1", &key).unwrap();
        let calls = r.calls.lock().unwrap();
        assert_eq!(calls.len(), 3);
        for (argv, input) in calls.iter() {
            assert_eq!(input, b"k3y-bytes");
            assert!(!argv.iter().any(|a| a.contains("k3y")), "{argv:?}");
            let i = argv.iter().position(|a| a == "--key-file").unwrap();
            assert_eq!(argv[i + 1], "-", "{argv:?}");
        }
        assert!(calls[0].0.contains(&"luksFormat".to_string()));
        assert!(calls[1].0.contains(&"--disable-keyring".to_string()));
        assert!(calls[1].0.contains(&"--allow-discards".to_string()));
        assert_eq!(calls[1].0.last().unwrap(), "lvms-crypt-v1");
    }

    #[test]
    fn failures_are_told_apart() {
        let wrong = Record {
            fail: Some((2, "No key available with this passphrase.\n")),
            ..Default::default()
        };
        let key = Key::new(b"x".to_vec()).unwrap();
        assert!(is_wrong_key(&test_key(&wrong, "/dev/x", &key).unwrap_err()));
        let inactive = Record {
            fail: Some((4, "Device lvms-crypt-v1 is not active.\n")),
            ..Default::default()
        };
        assert_eq!(status(&inactive, "lvms-crypt-v1").unwrap(), None);
        close(&inactive, "lvms-crypt-v1").unwrap();
        let busy = Record {
            fail: Some((5, "Device lvms-crypt-v1 is still in use.\n")),
            ..Default::default()
        };
        let e = close(&busy, "lvms-crypt-v1").unwrap_err();
        assert!(!is_wrong_key(&e), "{e}");
        let not_luks = Record {
            fail: Some((1, "")),
            ..Default::default()
        };
        assert!(!is_luks2(&not_luks, "/dev/x").unwrap());
    }
}
