//! Compiles the KServe V2 gRPC description with protox, so no system protoc is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto/grpc_service.proto");
    let fds = protox::compile(["grpc_service.proto"], ["../proto"])?;
    // The binary only needs the client.
    tonic_prost_build::configure()
        .build_server(false)
        // Bytes lets a pre-encoded request be cloned per send without copying tensor data.
        .bytes(".")
        .compile_fds(fds.clone())?;
    // A server stub in its own folder lets the end-to-end test run a mock server; the binary never includes it.
    let mock_dir = PathBuf::from(std::env::var("OUT_DIR")?).join("mock_server");
    std::fs::create_dir_all(&mock_dir)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .generate_default_stubs(true)
        .bytes(".")
        .out_dir(&mock_dir)
        .compile_fds(fds)?;
    Ok(())
}
