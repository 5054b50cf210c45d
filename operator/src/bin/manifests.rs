//! `manifests [ROOT]`: writes `config/` (except `config/samples/`), `bundle/` and
//! `bundle.Dockerfile` under ROOT (default `.`) from the operator's sources of truth.
//! `manifests --check [ROOT]`: exits 1 and names the files that differ from what it generates.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let check = args.first().is_some_and(|a| a == "--check");
    if check {
        args.remove(0);
    }
    if args.len() > 1 || args.first().is_some_and(|a| a.starts_with('-')) {
        eprintln!("usage: manifests [--check] [ROOT]");
        return ExitCode::from(2);
    }
    let root = PathBuf::from(args.pop().unwrap_or_else(|| ".".into()));
    match lvms_operator::manifests::sync(&root, check) {
        Ok(stale) if stale.is_empty() => ExitCode::SUCCESS,
        Ok(written) if !check => {
            for f in written {
                println!("updated {}", root.join(f).display());
            }
            ExitCode::SUCCESS
        }
        Ok(stale) => {
            for f in stale {
                eprintln!("{f} is out of date; run `make manifests`");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("manifests: {}: {e}", root.display());
            ExitCode::FAILURE
        }
    }
}
