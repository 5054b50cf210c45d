//! Runs a program with arguments, never through a shell: user strings (device paths, names) are
//! single arguments, so no quoting bug can turn them into commands. The host runner enters the
//! host's namespaces with nsenter, for agents whose container has its own /etc/lvm and /run.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Error;

/// What a finished command printed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

pub trait Runner: Send + Sync {
    /// Runs `program args...` to completion. A non-zero exit is an [`Error::Command`] (or one of
    /// its classified forms) carrying the exit code and stderr.
    fn run(&self, program: &str, args: &[String]) -> Result<Output, Error>;
}

/// Where commands execute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// In this process's own namespaces.
    #[default]
    Direct,
    /// In the mount (and pid/ipc/uts) namespace of PID 1 on the host, through nsenter.
    HostNamespace,
}

/// The real runner, counting invocations so idle cost can be measured and exported.
#[derive(Debug, Default)]
pub struct Exec {
    mode: Mode,
    count: AtomicU64,
}

impl Exec {
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            count: AtomicU64::new(0),
        }
    }

    /// Commands run so far.
    pub fn invocations(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The argv actually executed for `program args`.
    pub fn argv(&self, program: &str, args: &[String]) -> Vec<String> {
        let mut argv = match self.mode {
            Mode::Direct => vec![],
            Mode::HostNamespace => [
                "nsenter", "--target", "1", "--mount", "--uts", "--ipc", "--pid", "--",
            ]
            .map(String::from)
            .to_vec(),
        };
        argv.push(program.to_string());
        argv.extend(args.iter().cloned());
        argv
    }
}

impl Runner for Exec {
    fn run(&self, program: &str, args: &[String]) -> Result<Output, Error> {
        self.count.fetch_add(1, Ordering::Relaxed);
        let argv = self.argv(program, args);
        let out = Command::new(&argv[0])
            .args(&argv[1..])
            // Stable, parseable messages; no warnings about inherited descriptors.
            .env("LC_ALL", "C")
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .output()
            .map_err(|e| Error::Spawn {
                program: argv[0].clone(),
                source: e,
            })?;
        let output = Output {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        if out.status.success() {
            Ok(output)
        } else {
            Err(Error::classify(
                argv.join(" "),
                out.status.code(),
                output.stderr,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_mode_wraps_in_nsenter_without_a_shell() {
        let e = Exec::new(Mode::HostNamespace);
        let argv = e.argv("lvs", &["vg/x; rm -rf /".into()]);
        assert_eq!(argv[0], "nsenter");
        assert_eq!(
            argv.last().unwrap(),
            "vg/x; rm -rf /",
            "a user string stays one argument"
        );
    }

    #[test]
    fn runs_and_reports_failures() {
        let e = Exec::new(Mode::Direct);
        let ok = e.run("printf", &["%s".into(), "a b".into()]).unwrap();
        assert_eq!(ok.stdout, "a b");
        let err = e
            .run("sh", &["-c".into(), "echo nope >&2; exit 3".into()])
            .unwrap_err();
        assert!(
            matches!(&err, Error::Command { code: Some(3), stderr, .. } if stderr.trim() == "nope"),
            "{err:?}"
        );
        assert!(matches!(
            e.run("/nonexistent/prog", &[]),
            Err(Error::Spawn { .. })
        ));
        assert_eq!(e.invocations(), 3);
    }
}
