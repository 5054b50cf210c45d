//! vg-manager: the node agent. Its disk discovery and volume group reconciler are built in
//! issues #4 and #5; until then the binary only identifies itself.

fn main() -> std::process::ExitCode {
    eprintln!(
        "vg-manager {}: the node agent is not built yet (issues #4, #5)",
        env!("CARGO_PKG_VERSION")
    );
    std::process::ExitCode::FAILURE
}
