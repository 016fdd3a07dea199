//! Compiles the KServe V2 gRPC description with protox, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto/grpc_service.proto");
    let fds = protox::compile(["grpc_service.proto"], ["../proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        // Bytes lets a pre-encoded request be cloned per send without copying tensor data.
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
