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

    /// Like [`Runner::run`], with `input` on the program's standard input: how a secret (a
    /// LUKS key) reaches a command without appearing in its argv, the environment or a file.
    /// Runners that cannot pass input refuse.
    fn run_with_input(
        &self,
        program: &str,
        args: &[String],
        input: &[u8],
    ) -> Result<Output, Error> {
        let _ = (args, input);
        Err(Error::Invalid(format!(
            "this command runner cannot pass standard input to {program}"
        )))
    }
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
    /// `--config` given to every `lvm` command (see [`crate::container`]).
    lvm_config: Option<String>,
    count: AtomicU64,
}

impl Exec {
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            lvm_config: None,
            count: AtomicU64::new(0),
        }
    }

    /// Every `lvm <command>` also gets `--config <config>`, which overrides lvm.conf.
    pub fn with_lvm_config(mut self, config: impl Into<String>) -> Self {
        self.lvm_config = Some(config.into());
        self
    }

    /// The `--config` string in effect, if any.
    pub fn lvm_config(&self) -> Option<&str> {
        self.lvm_config.as_deref()
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
        match (&self.lvm_config, args.split_first()) {
            // `--config` is an option of each LVM command, so it follows the command's name.
            (Some(config), Some((command, rest))) if program == "lvm" => {
                argv.push(command.clone());
                argv.push("--config".into());
                argv.push(config.clone());
                argv.extend(rest.iter().cloned());
            }
            _ => argv.extend(args.iter().cloned()),
        }
        argv
    }
}

impl Exec {
    fn command(&self, argv: &[String]) -> Command {
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..])
            // Stable, parseable messages; no warnings about inherited descriptors.
            .env("LC_ALL", "C")
            .env("LVM_SUPPRESS_FD_WARNINGS", "1");
        c
    }

    fn finish(argv: &[String], out: std::process::Output) -> Result<Output, Error> {
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

impl Runner for Exec {
    fn run(&self, program: &str, args: &[String]) -> Result<Output, Error> {
        self.count.fetch_add(1, Ordering::Relaxed);
        let argv = self.argv(program, args);
        let out = self.command(&argv).output().map_err(|e| Error::Spawn {
            program: argv[0].clone(),
            source: e,
        })?;
        Self::finish(&argv, out)
    }

    fn run_with_input(
        &self,
        program: &str,
        args: &[String],
        input: &[u8],
    ) -> Result<Output, Error> {
        use std::io::Write;
        use std::process::Stdio;
        self.count.fetch_add(1, Ordering::Relaxed);
        let argv = self.argv(program, args);
        let spawn = |e| Error::Spawn {
            program: argv[0].clone(),
            source: e,
        };
        let mut child = self
            .command(&argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn)?;
        // Written from another thread: a program that answers before reading all its input
        // cannot deadlock us on a full pipe. A program that exits without reading it all makes
        // the write fail (EPIPE); its exit status tells what happened.
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
            // Dropping stdin closes it: the program sees the end of its input.
        });
        let out = child.wait_with_output().map_err(spawn)?;
        let _ = writer.join();
        Self::finish(&argv, out)
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
    fn lvm_config_follows_the_lvm_command_only() {
        let e = Exec::new(Mode::Direct).with_lvm_config("activation{monitoring=0}");
        let args = ["lvcreate".to_string(), "-n".into(), "x".into()];
        assert_eq!(
            e.argv("lvm", &args),
            [
                "lvm",
                "lvcreate",
                "--config",
                "activation{monitoring=0}",
                "-n",
                "x"
            ]
        );
        assert_eq!(e.argv("lsblk", &args[1..]), ["lsblk", "-n", "x"]);
        assert_eq!(
            Exec::new(Mode::Direct).argv("lvm", &args),
            ["lvm", "lvcreate", "-n", "x"]
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

    #[test]
    fn input_reaches_standard_input_and_not_the_command_line() {
        let e = Exec::new(Mode::Direct);
        let secret = b"s3cret\nwith a newline\0and a NUL";
        let out = e
            .run_with_input("od", &["-An".into(), "-c".into()], secret)
            .unwrap();
        let seen: String = out.stdout.split_whitespace().collect();
        assert_eq!(seen, "s3cret\\nwithanewline\\0andaNUL", "{}", out.stdout);
        let err = e
            .run_with_input(
                "sh",
                &["-c".into(), "cat >/dev/null; exit 2".into()],
                secret,
            )
            .unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(
            matches!(err, Error::Command { code: Some(2), .. }),
            "{err:?}"
        );
    }
}
