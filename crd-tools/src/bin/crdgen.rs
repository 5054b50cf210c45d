//! `crdgen [DIR]`: writes every CRD of the API into DIR (default `crds/`), removing stale files.
//! `crdgen --check [DIR]`: exits 1 and names the files when DIR differs from what the types generate.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let check = args.first().is_some_and(|a| a == "--check");
    if check {
        args.remove(0);
    }
    if args.len() > 1 || args.first().is_some_and(|a| a.starts_with('-')) {
        eprintln!("usage: crdgen [--check] [DIR]");
        return ExitCode::from(2);
    }
    let dir = PathBuf::from(args.pop().unwrap_or_else(|| "crds".into()));
    match crd_tools::render::sync_dir(&dir, check) {
        Ok(stale) if stale.is_empty() => ExitCode::SUCCESS,
        Ok(written) if !check => {
            for f in written {
                println!("wrote {}", dir.join(f).display());
            }
            ExitCode::SUCCESS
        }
        Ok(stale) => {
            for f in stale {
                eprintln!("{}: {f} is out of date; run `make crds`", dir.display());
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("crdgen: {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}
