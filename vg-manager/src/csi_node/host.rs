//! The files the node service touches (targets, device nodes, the mount table), seen from the
//! mount namespace its commands run in. Kubelet's paths are the host's: an agent that mounts
//! through nsenter ([`Mode::HostNamespace`]) must also create, inspect and remove them there,
//! so in that mode these are commands through the same runner; otherwise plain system calls.
//! Everything here blocks: call it from `spawn_blocking`.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::sync::Arc;

use lvm::fs::Usage;
use lvm::mount::MountInfo;
use lvm::{Mode, Runner};
use tonic::Status;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Block,
    Other,
}

/// A path that exists, symlinks followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    pub kind: Kind,
    /// major:minor of a block device (0:0 for anything else).
    pub rdev: (u32, u32),
    /// The canonical path: what the mount table shows when something is mounted here.
    pub real: String,
}

#[derive(Clone)]
pub struct Host {
    pub runner: Arc<dyn Runner>,
    pub mode: Mode,
}

fn internal(what: String, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("{what}: {e}"))
}

impl Host {
    pub fn stat(&self, path: &str) -> Result<Option<Stat>, Status> {
        match self.mode {
            Mode::Direct => {
                let m = match std::fs::metadata(path) {
                    Ok(m) => m,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(internal(format!("stat {path}"), e)),
                };
                let t = m.file_type();
                let kind = if t.is_dir() {
                    Kind::Dir
                } else if t.is_file() {
                    Kind::File
                } else if t.is_block_device() {
                    Kind::Block
                } else {
                    Kind::Other
                };
                let real = std::fs::canonicalize(path)
                    .map_err(|e| internal(format!("resolving {path}"), e))?
                    .to_string_lossy()
                    .into_owned();
                let rdev = if kind == Kind::Block {
                    (rustix::fs::major(m.rdev()), rustix::fs::minor(m.rdev()))
                } else {
                    (0, 0)
                };
                Ok(Some(Stat { kind, rdev, real }))
            }
            Mode::HostNamespace => {
                let real = match self.runner.run("realpath", &["-e".into(), path.into()]) {
                    Ok(o) => o.stdout.trim_end_matches('\n').to_string(),
                    Err(e) if e.is_not_found() => return Ok(None),
                    Err(e) => return Err(internal(format!("resolving {path}"), e)),
                };
                let o = self
                    .runner
                    .run(
                        "stat",
                        &["-L".into(), "-c".into(), "%F|%t|%T".into(), path.into()],
                    )
                    .map_err(|e| internal(format!("stat {path}"), e))?;
                let (kind, rdev) = parse_stat(&o.stdout)
                    .ok_or_else(|| internal(format!("stat {path}"), "unexpected output"))?;
                Ok(Some(Stat { kind, rdev, real }))
            }
        }
    }

    /// Creates the directory and its parents; an existing one is fine.
    pub fn mkdir_all(&self, path: &str) -> Result<(), Status> {
        match self.mode {
            Mode::Direct => std::fs::create_dir_all(path).map_err(|e| e.to_string()),
            Mode::HostNamespace => self
                .runner
                .run("mkdir", &["-p".into(), path.into()])
                .map(drop)
                .map_err(|e| e.to_string()),
        }
        .map_err(|e| internal(format!("creating directory {path}"), e))
    }

    /// Creates an empty file (and its directory) unless it exists; never truncates.
    pub fn create_file(&self, path: &str) -> Result<(), Status> {
        if let Some(dir) = std::path::Path::new(path).parent() {
            self.mkdir_all(&dir.to_string_lossy())?;
        }
        match self.mode {
            Mode::Direct => std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map(drop)
                .map_err(|e| e.to_string()),
            Mode::HostNamespace => self
                .runner
                .run("touch", &[path.into()])
                .map(drop)
                .map_err(|e| e.to_string()),
        }
        .map_err(|e| internal(format!("creating file {path}"), e))
    }

    /// Removes an empty directory or a file. Never recursive: a directory that still holds
    /// something (a mount we failed to see, user data) must stay and fail loudly.
    pub fn remove(&self, path: &str, kind: Kind) -> Result<(), Status> {
        let dir = kind == Kind::Dir;
        match self.mode {
            Mode::Direct if dir => std::fs::remove_dir(path).map_err(|e| e.to_string()),
            Mode::Direct => std::fs::remove_file(path).map_err(|e| e.to_string()),
            Mode::HostNamespace => self
                .runner
                .run(if dir { "rmdir" } else { "rm" }, &[path.into()])
                .map(drop)
                .map_err(|e| e.to_string()),
        }
        .map_err(|e| internal(format!("removing {path}"), e))
    }

    pub fn mounts(&self) -> Result<Vec<MountInfo>, Status> {
        lvm::mount::read(self.mode).map_err(|e| Status::internal(e.to_string()))
    }

    /// Bytes and inodes of the filesystem mounted at `path`: one system call directly, `df` in
    /// the host's namespace (our own view of the path may not be the host's).
    pub fn usage(&self, path: &str) -> Result<Usage, Status> {
        match self.mode {
            Mode::Direct => {
                let s = rustix::fs::statvfs(path)
                    .map_err(|e| internal(format!("statvfs {path}"), e))?;
                Ok(Usage {
                    total_bytes: s.f_blocks * s.f_frsize,
                    available_bytes: s.f_bavail * s.f_frsize,
                    used_bytes: s.f_blocks.saturating_sub(s.f_bfree) * s.f_frsize,
                    total_inodes: s.f_files,
                    free_inodes: s.f_ffree,
                    used_inodes: s.f_files.saturating_sub(s.f_ffree),
                })
            }
            Mode::HostNamespace => lvm::fs::usage(self.runner.as_ref(), path)
                .map_err(|e| internal(format!("df {path}"), e)),
        }
    }
}

/// `stat -L -c '%F|%t|%T'`: file type in words, then the device's major and minor in hex.
pub fn parse_stat(out: &str) -> Option<(Kind, (u32, u32))> {
    let mut f = out.trim_end_matches('\n').split('|');
    let kind = match f.next()? {
        "directory" => Kind::Dir,
        "regular file" | "regular empty file" => Kind::File,
        "block special file" => Kind::Block,
        _ => Kind::Other,
    };
    let major = u32::from_str_radix(f.next()?, 16).ok()?;
    let minor = u32::from_str_radix(f.next()?, 16).ok()?;
    Some((
        kind,
        if kind == Kind::Block {
            (major, minor)
        } else {
            (0, 0)
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_output() {
        assert_eq!(
            parse_stat("block special file|fd|a\n"),
            Some((Kind::Block, (253, 10)))
        );
        assert_eq!(parse_stat("directory|0|0\n"), Some((Kind::Dir, (0, 0))));
        assert_eq!(
            parse_stat("regular empty file|0|0"),
            Some((Kind::File, (0, 0)))
        );
        assert_eq!(parse_stat("socket|0|0"), Some((Kind::Other, (0, 0))));
        assert_eq!(parse_stat("directory"), None);
        assert_eq!(parse_stat("directory|x|0"), None);
    }

    #[test]
    fn direct_files() {
        let h = Host {
            runner: Arc::new(lvm::Exec::new(Mode::Direct)),
            mode: Mode::Direct,
        };
        let dir = std::env::temp_dir().join(format!("csi-node-host-{}", std::process::id()));
        let d = dir.to_string_lossy().into_owned();
        let file = format!("{d}/sub/f");
        assert_eq!(h.stat(&file).unwrap(), None);
        h.create_file(&file).unwrap();
        let s = h.stat(&file).unwrap().unwrap();
        assert_eq!(s.kind, Kind::File);
        h.create_file(&file).unwrap();
        h.remove(&file, Kind::File).unwrap();
        assert_eq!(
            h.stat(&format!("{d}/sub")).unwrap().unwrap().kind,
            Kind::Dir
        );
        let u = h.usage(&d).unwrap();
        assert!(u.total_bytes > 0 && u.total_bytes >= u.used_bytes, "{u:?}");
        h.remove(&format!("{d}/sub"), Kind::Dir).unwrap();
        h.remove(&d, Kind::Dir).unwrap();
        assert!(h.stat("/dev/null").unwrap().unwrap().kind == Kind::Other);
    }
}
