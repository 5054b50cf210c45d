//! Typed failures of the LVM layer. "Not found" and "already exists" are told apart from other
//! failures so callers can make every operation idempotent.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed (exit {code:?}): {}", stderr.trim())]
    Command {
        command: String,
        code: Option<i32>,
        stderr: String,
    },
    #[error("not found: `{command}`: {}", stderr.trim())]
    NotFound { command: String, stderr: String },
    #[error("already exists: `{command}`: {}", stderr.trim())]
    AlreadyExists { command: String, stderr: String },
    #[error("could not parse the output of {what}: {message}")]
    Parse { what: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Sorts a failed command by what its stderr says (commands run with LC_ALL=C).
    pub fn classify(command: String, code: Option<i32>, stderr: String) -> Self {
        let s = stderr.to_ascii_lowercase();
        const NOT_FOUND: [&str; 6] = [
            "not found",
            "failed to find",
            "doesn't exist",
            "does not exist",
            "no such file",
            "cannot find",
        ];
        if s.contains("already exists") || s.contains("already in volume group") {
            Error::AlreadyExists { command, stderr }
        } else if NOT_FOUND.iter().any(|p| s.contains(p)) {
            Error::NotFound { command, stderr }
        } else {
            Error::Command {
                command,
                code,
                stderr,
            }
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    pub fn is_already_exists(&self) -> bool {
        matches!(self, Error::AlreadyExists { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_of_real_lvm_messages() {
        let c = |e: &str| Error::classify("x".into(), Some(5), e.into());
        assert!(
            c("  Volume group \"vg9\" not found\n  Cannot process volume group vg9\n")
                .is_not_found()
        );
        assert!(c("  Failed to find logical volume \"vg1/lv9\"\n").is_not_found());
        assert!(
            c("  Logical Volume \"lv1\" already exists in volume group \"vg1\"\n")
                .is_already_exists()
        );
        assert!(c("  A volume group called vg1 already exists.\n").is_already_exists());
        assert!(
            c("  Physical volume '/dev/vda' is already in volume group 'vg1'\n")
                .is_already_exists()
        );
        assert!(matches!(
            c("  Insufficient free space: 256 extents needed, but only 10 available\n"),
            Error::Command { code: Some(5), .. }
        ));
    }
}
