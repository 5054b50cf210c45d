//! Mounts: the kernel's mount table (`/proc/<pid>/mountinfo`) read into typed entries, and the
//! mount/umount commands run through a [`Runner`], so they land in the runner's mount namespace
//! (the host's, for an agent in a container using [`Mode::HostNamespace`]).

use crate::error::Error;
use crate::runner::{Mode, Runner};

/// One line of mountinfo (see proc(5)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountInfo {
    pub id: u32,
    pub parent: u32,
    /// `st_dev` of the mounted filesystem: for a block-device filesystem, the device's
    /// major:minor; for a bind mount of a device node, the filesystem holding the node (devtmpfs).
    pub major: u32,
    pub minor: u32,
    /// The directory (or file) of the filesystem mounted here: `/` for a whole filesystem, the
    /// bound path for a bind mount (`/dm-3` for a device node bound from devtmpfs).
    pub root: String,
    /// Where it is mounted, relative to the reading process's root, unescaped.
    pub mount_point: String,
    /// Per-mount options (`rw`/`ro`, `nosuid`, `relatime`, ...).
    pub options: Vec<String>,
    pub fs_type: String,
    /// What was mounted: a device path, or a name such as `tmpfs`, unescaped.
    pub source: String,
    /// Per-superblock options.
    pub super_options: Vec<String>,
}

impl MountInfo {
    /// Read-only for this mount point (a bind mount can be read-only over a writable filesystem).
    pub fn read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }
}

/// Where the mount table of `mode`'s namespace is: PID 1's for the host, ours otherwise.
pub fn mountinfo_path(mode: Mode) -> &'static str {
    match mode {
        Mode::Direct => "/proc/self/mountinfo",
        Mode::HostNamespace => "/proc/1/mountinfo",
    }
}

/// Reads the mount table of `mode`'s mount namespace (a file read, no command).
pub fn read(mode: Mode) -> Result<Vec<MountInfo>, Error> {
    let path = mountinfo_path(mode);
    let text = std::fs::read(path).map_err(|e| Error::Parse {
        what: path.into(),
        message: format!("cannot read it: {e}"),
    })?;
    parse(&String::from_utf8_lossy(&text))
}

/// Parses mountinfo text. A malformed line is an error rather than skipped: a mount we cannot
/// see could make a caller mount twice or remove a directory that still has a mount on it.
pub fn parse(text: &str) -> Result<Vec<MountInfo>, Error> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Result<MountInfo, Error> {
    let bad = |why: &str| Error::Parse {
        what: "mountinfo".into(),
        message: format!("{why} in line {line:?}"),
    };
    let fields: Vec<&str> = line.split(' ').collect();
    // Optional fields (shared:N, master:N, ...) end at a lone "-".
    let sep = fields
        .iter()
        .skip(6)
        .position(|f| *f == "-")
        .map(|p| p + 6)
        .ok_or_else(|| bad("no \"-\" separator"))?;
    if fields.len() < sep + 4 {
        return Err(bad("too few fields"));
    }
    let num = |s: &str, what: &str| {
        s.parse::<u32>()
            .map_err(|_| bad(&format!("{what} {s:?} is not a number")))
    };
    let (major, minor) = fields[2]
        .split_once(':')
        .ok_or_else(|| bad("no major:minor"))?;
    let list = |s: &str| s.split(',').map(String::from).collect::<Vec<_>>();
    Ok(MountInfo {
        id: num(fields[0], "mount id")?,
        parent: num(fields[1], "parent id")?,
        major: num(major, "major")?,
        minor: num(minor, "minor")?,
        root: unescape(fields[3]),
        mount_point: unescape(fields[4]),
        options: list(fields[5]),
        fs_type: unescape(fields[sep + 1]),
        source: unescape(fields[sep + 2]),
        super_options: list(fields[sep + 3]),
    })
}

/// Undoes the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134`
/// backslash); anything else is kept as it is.
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = |c: u8| (b'0'..=b'7').contains(&c);
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| octal(*c)) {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every mount on `mount_point`, in table order.
pub fn at<'a>(
    mounts: &'a [MountInfo],
    mount_point: &'a str,
) -> impl Iterator<Item = &'a MountInfo> {
    mounts.iter().filter(move |m| m.mount_point == mount_point)
}

/// The mount visible at `mount_point`: the one no other mount there is stacked on.
pub fn top<'a>(mounts: &'a [MountInfo], mount_point: &str) -> Option<&'a MountInfo> {
    let here: Vec<&MountInfo> = mounts
        .iter()
        .filter(|m| m.mount_point == mount_point)
        .collect();
    here.iter()
        .rev()
        .find(|m| !here.iter().any(|o| o.parent == m.id))
        .copied()
}

/// Where the filesystem on block device `devno` (major:minor), named `path`, is mounted, in
/// table order. A mount's numbers are its device's, except for btrfs (an anonymous 0:N), which
/// is matched by its source as lsblk does. A mount point beneath another of the same device is
/// left out: in a host's table those are the bind mounts kubelet makes inside a data disk's own
/// mount (subPath volumes), and the outer one is what says whose disk it is.
pub fn mount_points(mounts: &[MountInfo], devno: Option<(u32, u32)>, path: &str) -> Vec<String> {
    let on_device: Vec<&str> = mounts
        .iter()
        .filter(|m| devno == Some((m.major, m.minor)) || m.source == path)
        .map(|m| m.mount_point.as_str())
        .collect();
    let beneath = |inner: &str, outer: &str| {
        inner != outer && (outer == "/" || inner.starts_with(&format!("{outer}/")))
    };
    let mut out: Vec<String> = Vec::new();
    for p in &on_device {
        if !on_device.iter().any(|o| beneath(p, o)) && !out.iter().any(|x| x == p) {
            out.push(p.to_string());
        }
    }
    out
}

fn check_path(what: &str, p: &str) -> Result<(), Error> {
    // Absolute, so it can never be read as an option of mount or umount.
    if p.starts_with('/') {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{what} {p:?} is not an absolute path"
        )))
    }
}

/// `mount [-t fs_type] [-o options] source target`.
pub fn mount(
    runner: &dyn Runner,
    source: &str,
    target: &str,
    fs_type: Option<&str>,
    options: &[String],
) -> Result<(), Error> {
    check_path("mount source", source)?;
    check_path("mount target", target)?;
    let mut a = vec![];
    if let Some(t) = fs_type {
        a.extend(["-t".to_string(), t.to_string()]);
    }
    let options: Vec<&str> = options
        .iter()
        .map(String::as_str)
        .filter(|o| !o.is_empty())
        .collect();
    if !options.is_empty() {
        a.extend(["-o".to_string(), options.join(",")]);
    }
    a.extend([source.to_string(), target.to_string()]);
    runner.run("mount", &a).map(drop)
}

/// `mount --bind source target`: `source` (a file, directory or device node) appears at `target`.
pub fn bind(runner: &dyn Runner, source: &str, target: &str) -> Result<(), Error> {
    check_path("bind source", source)?;
    check_path("bind target", target)?;
    runner
        .run("mount", &["--bind".into(), source.into(), target.into()])
        .map(drop)
}

/// Makes the bind mount at `target` read-only (a bind mount starts with its source's flags; read
/// only takes a second, remount step).
pub fn remount_read_only(runner: &dyn Runner, target: &str) -> Result<(), Error> {
    check_path("mount target", target)?;
    runner
        .run(
            "mount",
            &["-o".into(), "remount,bind,ro".into(), target.into()],
        )
        .map(drop)
}

/// Unmounts the top mount at `target`.
pub fn umount(runner: &dyn Runner, target: &str) -> Result<(), Error> {
    check_path("umount target", target)?;
    runner.run("umount", &[target.into()]).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::Output;
    use std::sync::Mutex;

    const TABLE: &str = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
25 1 0:5 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev rw,size=4010000k,nr_inodes=1002500,mode=755
29 1 253:0 / / rw,relatime shared:1 - ext4 /dev/mapper/root rw,errors=remount-ro
301 29 253:3 / /var/lib/kubelet/pods/a\\040b/volumes/kubernetes.io~csi/pvc-1/mount rw,relatime shared:170 - xfs /dev/mapper/vg1-pvc--1 rw,attr2,inode64,nouuid
302 29 0:5 /dm-4 /var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/publish/pvc-2/uid ro,nosuid,relatime shared:2 - devtmpfs udev rw,size=4010000k
310 29 0:40 / /mnt/stack rw master:7 - tmpfs tmpfs rw
311 310 0:41 / /mnt/stack rw - tmpfs second rw
312 311 253:5 / /mnt/stack ro - ext4 /dev/vg1/x ro
";

    #[test]
    fn parses_fields_escapes_and_optional_fields() {
        let m = parse(TABLE).unwrap();
        assert_eq!(m.len(), 8);
        let fs = &m[3];
        assert_eq!((fs.id, fs.parent, fs.major, fs.minor), (301, 29, 253, 3));
        assert_eq!(
            fs.mount_point, "/var/lib/kubelet/pods/a b/volumes/kubernetes.io~csi/pvc-1/mount",
            "\\040 is a space"
        );
        assert_eq!(
            (fs.fs_type.as_str(), fs.source.as_str(), fs.root.as_str()),
            ("xfs", "/dev/mapper/vg1-pvc--1", "/")
        );
        assert!(fs.super_options.contains(&"nouuid".to_string()));
        assert!(!fs.read_only());
        // A device node bound from devtmpfs: the numbers are devtmpfs's, root names the node.
        let blk = &m[4];
        assert_eq!(
            (blk.major, blk.minor, blk.root.as_str(), blk.read_only()),
            (0, 5, "/dm-4", true)
        );
        assert_eq!(m[0].options[0], "rw");
        assert_eq!(m[5].fs_type, "tmpfs", "one optional field");
        assert_eq!(m[6].fs_type, "tmpfs", "no optional field");
    }

    #[test]
    fn stacked_mounts_and_the_one_on_top() {
        let m = parse(TABLE).unwrap();
        assert_eq!(at(&m, "/mnt/stack").count(), 3);
        let t = top(&m, "/mnt/stack").unwrap();
        assert_eq!(
            (t.id, t.source.as_str(), t.read_only()),
            (312, "/dev/vg1/x", true)
        );
        assert!(top(&m, "/mnt/none").is_none());
        assert_eq!(top(&m, "/").unwrap().id, 29);
    }

    /// A node whose data disk /dev/sdb (8:16) holds /var/lib/kubelet, with /var/lib/containerd
    /// bound from it, as its init process (the host) sees it, and as the vg-manager container
    /// sees it: its /etc/hosts, termination log and hostPath volumes come from the same disk.
    const HOST: &str = "\
24 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
29 1 8:3 / / rw,relatime shared:1 - xfs /dev/sda3 rw,attr2,inode64,noquota
31 29 8:2 / /boot rw,relatime shared:63 - ext4 /dev/sda2 rw
88 29 8:16 / /var/lib/kubelet rw,relatime shared:45 - ext4 /dev/sdb rw
89 29 8:16 /containerd /var/lib/containerd rw,relatime shared:45 - ext4 /dev/sdb rw
412 88 8:16 /pods/0c7e/volume-subpaths/conf/app/0 /var/lib/kubelet/pods/0c7e/volume-subpaths/conf/app/0 rw,relatime shared:45 - ext4 /dev/sdb rw
415 88 0:61 / /var/lib/kubelet/pods/0c7e/volumes/kubernetes.io~projected/kube-api-access-x rw,relatime shared:201 - tmpfs tmpfs rw,size=8192k
520 29 0:70 / /mnt/data rw,relatime shared:240 - btrfs /dev/sdc rw,space_cache=v2,subvolid=5,subvol=/
";
    const CONTAINER: &str = "\
1201 1100 0:95 / / rw,relatime - overlay overlay rw,lowerdir=/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/31/fs
1210 1201 8:16 /pods/9f1d/etc-hosts /etc/hosts rw,relatime - ext4 /dev/sdb rw
1211 1201 8:16 /pods/9f1d/containers/vg-manager/4a1b /dev/termination-log rw,relatime - ext4 /dev/sdb rw
1212 1201 8:16 /plugins/topolvm.io/node /run/topolvm rw,relatime - ext4 /dev/sdb rw
1213 1201 8:16 /pods /var/lib/kubelet/pods rw,relatime shared:45 master:45 - ext4 /dev/sdb rw
";

    #[test]
    fn mount_points_of_a_device_from_either_table() {
        let host = parse(HOST).unwrap();
        assert_eq!(
            mount_points(&host, Some((8, 16)), "/dev/sdb"),
            ["/var/lib/kubelet", "/var/lib/containerd"],
            "kubelet's subPath bind is beneath its disk's mount"
        );
        assert_eq!(mount_points(&host, Some((8, 3)), "/dev/sda3"), ["/"]);
        assert_eq!(
            mount_points(&host, None, "/dev/sdc"),
            ["/mnt/data"],
            "btrfs by its source"
        );
        assert!(mount_points(&host, Some((8, 32)), "/dev/sdd").is_empty());
        let container = parse(CONTAINER).unwrap();
        assert_eq!(
            mount_points(&container, Some((8, 16)), "/dev/sdb"),
            [
                "/etc/hosts",
                "/dev/termination-log",
                "/run/topolvm",
                "/var/lib/kubelet/pods"
            ],
            "what lsblk reports inside the pod"
        );
    }

    #[test]
    fn escapes() {
        assert_eq!(unescape("a\\040b\\011c\\012d\\134e"), "a b\tc\nd\\e");
        assert_eq!(unescape("plain"), "plain");
        assert_eq!(
            unescape("trail\\04"),
            "trail\\04",
            "incomplete escapes stay"
        );
        assert_eq!(unescape("\\999"), "\\999", "not octal");
        assert_eq!(unescape("\\"), "\\");
        assert_eq!(unescape("caf\\303\\251"), "café", "bytes of UTF-8");
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert!(parse("").unwrap().is_empty());
        assert!(
            parse("1 2 3:4 / /x rw shared:1 ext4 /dev/x rw").is_err(),
            "no separator"
        );
        assert!(parse("1 2 3:4 / /x rw - ext4").is_err(), "too short");
        assert!(parse("a 2 3:4 / /x rw - ext4 /dev/x rw").is_err());
        assert!(parse("1 2 34 / /x rw - ext4 /dev/x rw").is_err());
    }

    #[derive(Default)]
    struct Record(Mutex<Vec<String>>);
    impl Runner for Record {
        fn run(&self, program: &str, args: &[String]) -> Result<Output, Error> {
            self.0
                .lock()
                .unwrap()
                .push(format!("{program} {}", args.join(" ")));
            Ok(Output::default())
        }
    }

    #[test]
    fn command_lines() {
        let r = Record::default();
        mount(
            &r,
            "/dev/vg1/a",
            "/t/a b",
            Some("xfs"),
            &["ro".into(), "".into(), "nouuid".into()],
        )
        .unwrap();
        mount(&r, "/dev/vg1/a", "/t", None, &[]).unwrap();
        bind(&r, "/dev/vg1/b", "/t/f").unwrap();
        remount_read_only(&r, "/t/f").unwrap();
        umount(&r, "/t/f").unwrap();
        assert!(matches!(umount(&r, "-l"), Err(Error::Invalid(_))));
        assert!(matches!(bind(&r, "dev", "/t"), Err(Error::Invalid(_))));
        assert_eq!(
            *r.0.lock().unwrap(),
            [
                "mount -t xfs -o ro,nouuid /dev/vg1/a /t/a b",
                "mount /dev/vg1/a /t",
                "mount --bind /dev/vg1/b /t/f",
                "mount -o remount,bind,ro /t/f",
                "umount /t/f",
            ]
        );
    }

    #[test]
    fn reads_our_own_table() {
        let m = read(Mode::Direct).unwrap();
        assert!(top(&m, "/").is_some(), "every namespace has a root mount");
    }
}
