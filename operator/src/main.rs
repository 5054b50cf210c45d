//! lvms-operator: the cluster-wide controller. Its reconcilers are built in issue #3; until then
//! the binary only identifies itself, so nothing can mistake it for a working operator.

fn main() -> std::process::ExitCode {
    eprintln!(
        "lvms-operator {}: the reconcilers are not built yet (issue #3)",
        env!("CARGO_PKG_VERSION")
    );
    std::process::ExitCode::FAILURE
}
