//! Generates the CSI gRPC types and services from proto/csi.proto (protoc comes from Debian's
//! protobuf-compiler, installed by hack/setup.sh; PROTOC overrides it).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/csi.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/csi.proto"], &["proto"])?;
    Ok(())
}
