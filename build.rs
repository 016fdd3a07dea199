//! Compiles proto/grpc_service.proto with protox (pure Rust; no system protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/grpc_service.proto");
    let descriptors = protox::compile(["grpc_service.proto"], ["proto"])?;
    tonic_prost_build::configure()
        // Tensor payloads stay `Bytes`, so raw contents are sliced rather than copied.
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
