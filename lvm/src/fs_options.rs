//! Filesystem options a StorageClass may set: extra `mkfs` arguments (the parameter
//! `lvms.topolvm.io/mkfs-options`) and mount options (the StorageClass's `mountOptions`).
//!
//! Both come from whoever may write a StorageClass or edit a PersistentVolume, and both end up
//! on a privileged node agent's command line, so they are checked against an allow-list twice:
//! by the CSI controller at CreateVolume (a clear error before any volume exists) and by the
//! node before it runs anything (a PV can be edited after it was provisioned). Options are
//! split into argv words here, never handed to a shell, and words that look like shell syntax
//! (quotes, `$`, `;`, ...) are refused rather than taken literally, so nobody is surprised by
//! what a quote would have meant. Nothing that names a path is accepted: a path would let a
//! StorageClass make mkfs read a file of the node (`-p protofile`, `-d root-dir`) or mount
//! options point at one (`journal_path=`).

use std::fmt;

use crate::fs::Filesystem;

/// An option refused, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionError {
    /// The word (or comma-separated piece) that was refused.
    pub option: String,
    pub reason: String,
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.option, self.reason)
    }
}

impl std::error::Error for OptionError {}

fn refuse(option: &str, reason: impl Into<String>) -> OptionError {
    OptionError {
        option: option.to_string(),
        reason: reason.into(),
    }
}

/// Characters a word may hold: what the allowed options need (`size=512`, `^has_journal`,
/// `root_owner=1000:1000`, `reflink=1,crc=1`) and nothing a shell or a path would.
fn allowed_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "=,._:+-^".contains(c)
}

fn check_chars(word: &str) -> Result<(), OptionError> {
    for c in word.chars() {
        if allowed_char(c) {
            continue;
        }
        let reason = match c {
            '"' | '\'' | '`' => {
                "quotes are not supported: options are words separated by spaces and never pass through a shell".to_string()
            }
            '/' => "paths are not allowed".to_string(),
            _ => format!(
                "character {c:?} is not allowed (only letters, digits and = , . _ : + - ^; no shell is involved)"
            ),
        };
        return Err(refuse(word, reason));
    }
    Ok(())
}

/// Splits `text` into argv words at whitespace, refusing any word with a character outside
/// the allowed set (see [`check_chars`]).
pub fn split(text: &str) -> Result<Vec<String>, OptionError> {
    text.split_ascii_whitespace()
        .map(|w| check_chars(w).map(|()| w.to_string()))
        .collect()
}

// ---- values ------------------------------------------------------------------------------------

/// What a value (of an option or a sub-option) may be.
#[derive(Clone, Copy, Debug)]
enum Value {
    /// No value: a flag (`-K`, `-j`, `nodiscard`).
    None,
    /// Digits, optionally with one unit letter (`512`, `4k`, `64m`), as mkfs and mount read them.
    Number,
    /// `0` or `1`.
    Bool,
    /// One of these words.
    Choice(&'static [&'static str]),
    /// A filesystem label of at most this many bytes.
    Label(usize),
    /// Comma-separated sub-options, each `key=value` or a bare key, from this table.
    Sub(&'static [(&'static str, Value)]),
    /// ext4 `-O`: comma-separated feature names, each optionally `^` (off).
    Features,
    /// `uid:gid`, both numbers (ext4 `root_owner`).
    Owner,
}

fn is_number(v: &str) -> bool {
    let digits = v
        .strip_suffix(|c: char| "kKmMgGtT".contains(c))
        .unwrap_or(v);
    !digits.is_empty() && digits.len() <= 19 && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Checks `value` of `option` against `kind`; `Err` holds the reason.
fn check_value(kind: Value, value: Option<&str>) -> Result<(), String> {
    match (kind, value) {
        (Value::None, None) => Ok(()),
        (Value::None, Some(_)) => Err("takes no value".into()),
        (_, None) => Err("needs a value".into()),
        (Value::Number, Some(v)) if is_number(v) => Ok(()),
        (Value::Number, Some(_)) => Err("must be a number (optionally with k, m, g or t)".into()),
        (Value::Bool, Some("0" | "1")) => Ok(()),
        (Value::Bool, Some(_)) => Err("must be 0 or 1".into()),
        (Value::Choice(list), Some(v)) if list.contains(&v) => Ok(()),
        (Value::Choice(list), Some(_)) => Err(format!("must be one of {}", list.join(", "))),
        (Value::Label(max), Some(v)) => {
            if v.is_empty() || v.len() > max || v.starts_with('-') {
                Err(format!(
                    "a label is 1 to {max} characters and does not start with -"
                ))
            } else if v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                Ok(())
            } else {
                Err("a label holds letters, digits and . _ - only".into())
            }
        }
        (Value::Sub(table), Some(v)) => check_subs(table, v),
        (Value::Features, Some(v)) => {
            let ok = |f: &str| {
                let f = f.strip_prefix('^').unwrap_or(f);
                !f.is_empty()
                    && f.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            };
            if v.split(',').all(ok) {
                Ok(())
            } else {
                Err(
                    "must be feature names separated by commas, each optionally prefixed with ^"
                        .into(),
                )
            }
        }
        (Value::Owner, Some(v)) => match v.split_once(':') {
            Some((u, g)) if is_plain_number(u) && is_plain_number(g) => Ok(()),
            _ => Err("must be uid:gid (numbers)".into()),
        },
    }
}

fn is_plain_number(v: &str) -> bool {
    !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit())
}

fn check_subs(table: &[(&str, Value)], text: &str) -> Result<(), String> {
    let mut seen: Vec<&str> = vec![];
    for piece in text.split(',') {
        let (key, value) = match piece.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (piece, None),
        };
        let Some((_, kind)) = table.iter().find(|(k, _)| *k == key) else {
            let known: Vec<&str> = table.iter().map(|(k, _)| *k).collect();
            return Err(format!(
                "sub-option {key:?} is not allowed (allowed: {})",
                known.join(", ")
            ));
        };
        if seen.contains(&key) {
            return Err(format!("sub-option {key:?} is given twice"));
        }
        seen.push(key);
        check_value(*kind, value).map_err(|why| format!("{key}: {why}"))?;
    }
    Ok(())
}

// ---- mkfs --------------------------------------------------------------------------------------

const XFS_MKFS: &[(&str, Value)] = &[
    ("-b", Value::Sub(&[("size", Value::Number)])),
    (
        "-d",
        Value::Sub(&[
            ("agcount", Value::Number),
            ("agsize", Value::Number),
            ("su", Value::Number),
            ("sw", Value::Number),
            ("sunit", Value::Number),
            ("swidth", Value::Number),
        ]),
    ),
    (
        "-i",
        Value::Sub(&[
            ("size", Value::Number),
            ("maxpct", Value::Number),
            ("align", Value::Bool),
            ("sparse", Value::Bool),
            ("projid32bit", Value::Bool),
            ("nrext64", Value::Bool),
        ]),
    ),
    (
        "-l",
        Value::Sub(&[
            ("size", Value::Number),
            ("su", Value::Number),
            ("sunit", Value::Number),
            ("lazy-count", Value::Bool),
            ("version", Value::Choice(&["1", "2"])),
        ]),
    ),
    (
        "-m",
        Value::Sub(&[
            ("crc", Value::Bool),
            ("finobt", Value::Bool),
            ("rmapbt", Value::Bool),
            ("reflink", Value::Bool),
            ("bigtime", Value::Bool),
            ("inobtcount", Value::Bool),
        ]),
    ),
    (
        "-n",
        Value::Sub(&[("size", Value::Number), ("ftype", Value::Bool)]),
    ),
    ("-s", Value::Sub(&[("size", Value::Number)])),
    ("-K", Value::None),
    ("-L", Value::Label(12)),
];

const EXT4_MKFS: &[(&str, Value)] = &[
    ("-b", Value::Number),
    ("-C", Value::Number),
    ("-g", Value::Number),
    ("-G", Value::Number),
    ("-i", Value::Number),
    ("-I", Value::Number),
    ("-m", Value::Number),
    ("-N", Value::Number),
    (
        "-E",
        Value::Sub(&[
            ("stride", Value::Number),
            ("stripe_width", Value::Number),
            ("stripe-width", Value::Number),
            ("lazy_itable_init", Value::Bool),
            ("lazy_journal_init", Value::Bool),
            ("packed_meta_blocks", Value::Bool),
            ("num_backup_sb", Value::Choice(&["0", "1", "2"])),
            ("root_owner", Value::Owner),
            ("discard", Value::None),
            ("nodiscard", Value::None),
        ]),
    ),
    ("-J", Value::Sub(&[("size", Value::Number)])),
    ("-O", Value::Features),
    (
        "-T",
        Value::Choice(&[
            "default",
            "small",
            "floppy",
            "big",
            "huge",
            "news",
            "largefile",
            "largefile4",
        ]),
    ),
    ("-L", Value::Label(16)),
    ("-j", Value::None),
];

/// Options refused for a reason worth telling (anything else not listed is simply not allowed).
fn mkfs_refusal(fs: Filesystem, flag: &str) -> Option<&'static str> {
    Some(match (fs, flag) {
        (_, "-f" | "-F") => {
            "forces mkfs over an existing signature: volumes are formatted only while blank"
        }
        (Filesystem::Xfs, "-N") | (Filesystem::Ext4, "-n") => {
            "is a dry run: it would leave the volume without a filesystem"
        }
        (Filesystem::Xfs, "-p") | (Filesystem::Ext4, "-d") => {
            "populates the filesystem from a file of the node"
        }
        (Filesystem::Ext4, "-l" | "-c") => "reads or checks bad blocks, not an option for an LV",
        (Filesystem::Ext4, "-S") => "writes superblocks only, destroying a filesystem",
        (Filesystem::Xfs, "-r") => "adds a realtime device",
        (_, "-q") => "is always given",
        _ => return None,
    })
}

/// Checks extra mkfs options for `fs` and returns them as argv words, in the order given.
/// Each option is its own word and its value the next one (`-i size=512`), as the mkfs manual
/// pages write them; an option is given at most once (sub-options go together:
/// `-i size=512,maxpct=5`).
pub fn mkfs_options(fs: Filesystem, text: &str) -> Result<Vec<String>, OptionError> {
    let words = split(text)?;
    let table = match fs {
        Filesystem::Xfs => XFS_MKFS,
        Filesystem::Ext4 => EXT4_MKFS,
    };
    let mut seen: Vec<&str> = vec![];
    let mut i = 0;
    while i < words.len() {
        let w = words[i].as_str();
        let name = fs.as_str();
        if !w.starts_with('-') {
            return Err(refuse(w, "expected an option starting with -"));
        }
        if let Some(why) = mkfs_refusal(fs, w) {
            return Err(refuse(w, format!("not allowed for {name}: {why}")));
        }
        let Some((flag, kind)) = table.iter().find(|(f, _)| *f == w) else {
            // `-isize=512`: getopt would read it, but the table checks words, so ask for two.
            if let Some((flag, _)) = table.iter().find(|(f, _)| w.starts_with(f) && w.len() > 2) {
                return Err(refuse(
                    w,
                    format!(
                        "write the value as its own word: {flag} {}",
                        &w[flag.len()..]
                    ),
                ));
            }
            let known: Vec<&str> = table.iter().map(|(f, _)| *f).collect();
            return Err(refuse(
                w,
                format!(
                    "not in the allow-list for mkfs.{name} ({})",
                    known.join(" ")
                ),
            ));
        };
        if seen.contains(flag) {
            return Err(refuse(
                w,
                "given twice: put its sub-options together, separated by commas",
            ));
        }
        seen.push(flag);
        let value = match kind {
            Value::None => None,
            _ => {
                i += 1;
                Some(words.get(i).map(String::as_str).ok_or_else(|| {
                    refuse(w, format!("needs a value, e.g. {}", example(fs, flag)))
                })?)
            }
        };
        if let Err(why) = check_value(*kind, value) {
            let shown = value.map_or(w.to_string(), |v| format!("{w} {v}"));
            return Err(refuse(&shown, why));
        }
        i += 1;
    }
    Ok(words)
}

fn example(fs: Filesystem, flag: &str) -> &'static str {
    match (fs, flag) {
        (_, "-L") => "-L data",
        (Filesystem::Xfs, "-b") => "-b size=4096",
        (Filesystem::Xfs, "-m") => "-m reflink=1",
        (Filesystem::Xfs, _) => "-i size=512",
        (Filesystem::Ext4, "-E") => "-E lazy_itable_init=0",
        (Filesystem::Ext4, "-O") => "-O ^has_journal",
        (Filesystem::Ext4, _) => "-i 16384",
    }
}

/// The full mkfs command for `fs` on `device`: the driver's own options, then the extra ones
/// (already checked by [`mkfs_options`]). Ours: quiet, no discard (a new LV is already zeroed
/// or trimmed, and discarding a large volume can take minutes), and ext4's -F (mke2fs asks
/// for confirmation on a whole device otherwise). ext4 reads only the last `-E`, so a given
/// `-E` is merged with our `nodiscard` rather than added beside it.
pub fn mkfs_argv(fs: Filesystem, device: &str, extra: &[String]) -> (&'static str, Vec<String>) {
    let s = |x: &str| x.to_string();
    match fs {
        Filesystem::Xfs => {
            let mut a = vec![s("-q")];
            if !extra.iter().any(|w| w == "-K") {
                a.push(s("-K"));
            }
            a.extend(extra.iter().cloned());
            a.push(device.into());
            ("mkfs.xfs", a)
        }
        Filesystem::Ext4 => {
            let mut a = vec![s("-q"), s("-F")];
            let mut ext = None;
            let mut rest = vec![];
            let mut words = extra.iter();
            while let Some(w) = words.next() {
                if w == "-E" {
                    ext = words.next().cloned();
                } else {
                    rest.push(w.clone());
                }
            }
            let ext = match ext {
                Some(e) if e.split(',').any(|o| o == "discard" || o == "nodiscard") => e,
                Some(e) => format!("nodiscard,{e}"),
                None => s("nodiscard"),
            };
            a.extend([s("-E"), ext]);
            a.extend(rest);
            a.push(device.into());
            ("mkfs.ext4", a)
        }
    }
}

// ---- mount -------------------------------------------------------------------------------------

/// For both filesystems.
const MOUNT_COMMON: &[(&str, Value)] = &[
    ("ro", Value::None),
    ("rw", Value::None),
    ("noatime", Value::None),
    ("nodiratime", Value::None),
    ("relatime", Value::None),
    ("norelatime", Value::None),
    ("strictatime", Value::None),
    ("lazytime", Value::None),
    ("nolazytime", Value::None),
    ("sync", Value::None),
    ("async", Value::None),
    ("dirsync", Value::None),
    ("nosuid", Value::None),
    ("nodev", Value::None),
    ("noexec", Value::None),
    ("discard", Value::None),
    ("nodiscard", Value::None),
    ("nobarrier", Value::None),
    ("grpid", Value::None),
    ("nogrpid", Value::None),
    ("bsdgroups", Value::None),
    ("sysvgroups", Value::None),
    ("quota", Value::None),
    ("noquota", Value::None),
    ("usrquota", Value::None),
    ("grpquota", Value::None),
    ("prjquota", Value::None),
];

const MOUNT_XFS: &[(&str, Value)] = &[
    ("nouuid", Value::None),
    ("inode64", Value::None),
    ("inode32", Value::None),
    ("largeio", Value::None),
    ("nolargeio", Value::None),
    ("swalloc", Value::None),
    ("wsync", Value::None),
    ("attr2", Value::None),
    ("noattr2", Value::None),
    ("filestreams", Value::None),
    ("norecovery", Value::None),
    ("uquota", Value::None),
    ("gquota", Value::None),
    ("pquota", Value::None),
    ("uqnoenforce", Value::None),
    ("gqnoenforce", Value::None),
    ("pqnoenforce", Value::None),
    ("allocsize", Value::Number),
    ("logbufs", Value::Number),
    ("logbsize", Value::Number),
    ("sunit", Value::Number),
    ("swidth", Value::Number),
];

const MOUNT_EXT4: &[(&str, Value)] = &[
    ("barrier", Value::None),
    ("barrier", Value::Bool),
    ("commit", Value::Number),
    ("data", Value::Choice(&["ordered", "writeback", "journal"])),
    ("errors", Value::Choice(&["continue", "remount-ro"])),
    ("journal_checksum", Value::None),
    ("nojournal_checksum", Value::None),
    ("journal_async_commit", Value::None),
    ("auto_da_alloc", Value::None),
    ("noauto_da_alloc", Value::None),
    ("delalloc", Value::None),
    ("nodelalloc", Value::None),
    ("dioread_lock", Value::None),
    ("dioread_nolock", Value::None),
    ("block_validity", Value::None),
    ("noblock_validity", Value::None),
    ("acl", Value::None),
    ("noacl", Value::None),
    ("user_xattr", Value::None),
    ("i_version", Value::None),
    ("noinit_itable", Value::None),
    ("init_itable", Value::Number),
    ("stripe", Value::Number),
    ("inode_readahead_blks", Value::Number),
    ("max_batch_time", Value::Number),
    ("min_batch_time", Value::Number),
    ("resgid", Value::Number),
    ("resuid", Value::Number),
];

/// Options refused for a reason worth telling.
fn mount_refusal(name: &str, value: Option<&str>) -> Option<&'static str> {
    Some(match name {
        "suid" | "dev" | "exec" | "defaults" => {
            "widens privilege (setuid binaries, device nodes or executables on the volume; defaults means suid,dev,exec)"
        }
        "user" | "users" | "owner" | "group" => "lets unprivileged users mount or unmount it",
        "remount" | "bind" | "rbind" | "move" => "changes what the mount is, not how it behaves",
        "errors" if value == Some("panic") => "errors=panic would take the node down",
        _ if name.ends_with("context") => {
            "SELinux labels are kubelet's to set, not a StorageClass's"
        }
        _ => return None,
    })
}

/// Checks mount options (StorageClass `mountOptions`, CSI `mount_flags`) for `fs`. Each entry
/// may itself hold several options separated by commas, as `mount -o` takes them.
pub fn check_mount_options(fs: Filesystem, options: &[String]) -> Result<(), OptionError> {
    let specific = match fs {
        Filesystem::Xfs => MOUNT_XFS,
        Filesystem::Ext4 => MOUNT_EXT4,
    };
    for entry in options {
        for option in entry.split(',').filter(|o| !o.is_empty()) {
            check_chars(option)?;
            let (name, value) = match option.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (option, None),
            };
            let mut kinds = MOUNT_COMMON
                .iter()
                .chain(specific)
                .filter(|(k, _)| *k == name)
                .map(|(_, kind)| *kind)
                .peekable();
            if kinds.peek().is_none() {
                let why = match mount_refusal(name, value) {
                    Some(why) => why.to_string(),
                    None => format!("not in the allow-list of mount options for {}", fs.as_str()),
                };
                return Err(refuse(option, why));
            }
            // One name may take a value or not (ext4's barrier, barrier=0): any may match.
            let mut last = Ok(());
            for kind in kinds {
                last = check_value(kind, value);
                if last.is_ok() {
                    break;
                }
            }
            if let Err(why) = last {
                let why = mount_refusal(name, value).map_or(why, str::to_string);
                return Err(refuse(option, why));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn mount_err(fs: Filesystem, o: &str) -> OptionError {
        check_mount_options(fs, &[o.to_string()]).unwrap_err()
    }

    #[test]
    fn splitting_has_no_shell_syntax() {
        assert_eq!(
            split("  -i size=512\t-m reflink=1 ").unwrap(),
            words(&["-i", "size=512", "-m", "reflink=1"])
        );
        assert!(split("").unwrap().is_empty());
        for (text, word, why) in [
            ("-L 'my data'", "'my", "quotes are not supported"),
            ("-L \"x\"", "\"x\"", "quotes"),
            ("-K;reboot", "-K;reboot", "';'"),
            ("-K $(id)", "$(id)", "'$'"),
            ("-K `id`", "`id`", "quotes"),
            ("-p /etc/shadow", "/etc/shadow", "paths are not allowed"),
            ("-K | x", "|", "'|'"),
            ("-K>x", "-K>x", "'>'"),
            ("-K\\n", "-K\\n", "'\\\\'"),
        ] {
            let e = split(text).unwrap_err();
            assert_eq!(e.option, word, "{text}");
            assert!(e.reason.contains(why), "{text}: {}", e.reason);
        }
    }

    #[test]
    fn xfs_allow_list() {
        let x = Filesystem::Xfs;
        assert_eq!(
            mkfs_options(
                x,
                "-i size=512 -b size=4096 -m reflink=0,crc=1 -n ftype=1 -K -L data_1"
            )
            .unwrap(),
            words(&[
                "-i",
                "size=512",
                "-b",
                "size=4096",
                "-m",
                "reflink=0,crc=1",
                "-n",
                "ftype=1",
                "-K",
                "-L",
                "data_1"
            ])
        );
        assert!(mkfs_options(x, "-d su=64k,sw=4 -l size=64m,lazy-count=1").is_ok());
        let cases = [
            ("-f", "-f", "formatted only while blank"),
            ("-N", "-N", "dry run"),
            ("-p protofile", "-p", "file of the node"),
            ("-q", "-q", "always given"),
            ("-x", "-x", "not in the allow-list for mkfs.xfs"),
            ("-isize=512", "-isize=512", "its own word: -i size=512"),
            ("-i", "-i", "needs a value, e.g. -i size=512"),
            ("-i size=big", "-i size=big", "size: must be a number"),
            (
                "-i bogus=1",
                "-i bogus=1",
                "sub-option \"bogus\" is not allowed",
            ),
            ("-m reflink=2", "-m reflink=2", "reflink: must be 0 or 1"),
            ("-i size=512 -i maxpct=5", "-i", "given twice"),
            (
                "-i size=512,size=1024",
                "-i size=512,size=1024",
                "given twice",
            ),
            ("-d file=1", "-d file=1", "not allowed"),
            ("-L waytoolongforxfs", "-L waytoolongforxfs", "1 to 12"),
            ("-K extra", "extra", "expected an option"),
        ];
        for (text, option, why) in cases {
            let e = mkfs_options(x, text).unwrap_err();
            assert_eq!(e.option, option, "{text}");
            assert!(e.reason.contains(why), "{text}: {}", e.reason);
        }
    }

    #[test]
    fn ext4_allow_list() {
        let e4 = Filesystem::Ext4;
        assert!(
            mkfs_options(
                e4,
                "-b 4096 -i 16384 -I 512 -m 0 -N 100000 -E lazy_itable_init=0,root_owner=1000:1000 -O ^has_journal,metadata_csum -T largefile -L data -j"
            )
            .is_ok()
        );
        for (text, why) in [
            ("-F", "formatted only while blank"),
            ("-n", "dry run"),
            ("-d dir", "file of the node"),
            ("-S", "destroying"),
            ("-m x", "number"),
            ("-E root_owner=root", "uid:gid"),
            ("-O Has-Journal", "feature names"),
            ("-T gigantic", "one of default"),
            ("-E offset=4096", "not allowed"),
        ] {
            let e = mkfs_options(e4, text).unwrap_err();
            assert!(e.reason.contains(why), "{text}: {e}");
        }
        // An xfs option is not an ext4 one, and the other way round.
        assert!(mkfs_options(e4, "-K").is_err());
        assert!(mkfs_options(Filesystem::Xfs, "-j").is_err());
    }

    #[test]
    fn our_options_come_first_and_ext4_gets_one_e() {
        let x = Filesystem::Xfs;
        assert_eq!(
            mkfs_argv(x, "/dev/vg/lv", &words(&["-i", "size=512"])),
            (
                "mkfs.xfs",
                words(&["-q", "-K", "-i", "size=512", "/dev/vg/lv"])
            )
        );
        assert_eq!(
            mkfs_argv(x, "/dev/vg/lv", &words(&["-K"])).1,
            words(&["-q", "-K", "/dev/vg/lv"]),
            "no second -K"
        );
        let e4 = Filesystem::Ext4;
        assert_eq!(
            mkfs_argv(e4, "/d", &[]),
            ("mkfs.ext4", words(&["-q", "-F", "-E", "nodiscard", "/d"]))
        );
        assert_eq!(
            mkfs_argv(e4, "/d", &words(&["-m", "0", "-E", "lazy_itable_init=0"])).1,
            words(&[
                "-q",
                "-F",
                "-E",
                "nodiscard,lazy_itable_init=0",
                "-m",
                "0",
                "/d"
            ])
        );
        assert_eq!(
            mkfs_argv(e4, "/d", &words(&["-E", "discard"])).1,
            words(&["-q", "-F", "-E", "discard", "/d"]),
            "the class asked for discard: ours does not contradict it"
        );
    }

    #[test]
    fn mount_allow_list() {
        let x = Filesystem::Xfs;
        let e4 = Filesystem::Ext4;
        assert!(
            check_mount_options(
                x,
                &words(&["noatime", "nodiratime,discard", "logbsize=256k", "nouuid"])
            )
            .is_ok()
        );
        assert!(
            check_mount_options(
                e4,
                &words(&[
                    "relatime",
                    "barrier=0",
                    "nobarrier",
                    "barrier",
                    "data=writeback",
                    "commit=30"
                ])
            )
            .is_ok()
        );
        assert!(check_mount_options(x, &[]).is_ok());
        for (fs, o, why) in [
            (x, "suid", "widens privilege"),
            (x, "dev", "widens privilege"),
            (e4, "exec", "widens privilege"),
            (x, "defaults", "widens privilege"),
            (x, "user", "unprivileged users"),
            (x, "context=system_u:object_r:x:s0", "SELinux"),
            (e4, "errors=panic", "take the node down"),
            (e4, "journal_path=/dev/sda", "paths are not allowed"),
            (
                x,
                "data=writeback",
                "not in the allow-list of mount options for xfs",
            ),
            (e4, "nouuid", "for ext4"),
            (x, "allocsize=lots", "must be a number"),
            (e4, "barrier=2", "must be 0 or 1"),
            (x, "noatime;id", "';'"),
            (x, "bind", "changes what the mount is"),
        ] {
            let e = mount_err(fs, o);
            assert!(e.reason.contains(why), "{o}: {e}");
        }
        assert_eq!(
            mount_err(x, "noatime,exec").option,
            "exec",
            "the error names the piece refused"
        );
    }
}
