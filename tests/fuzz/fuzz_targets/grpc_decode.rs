//! Any protobuf message: what prost reads as a `ModelInferRequest`, the gRPC decoder turns into
//! a request or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tollgate::api::grpc::proto::ModelInferRequest;

fuzz_target!(|input: &[u8]| {
    if let Ok(message) = ModelInferRequest::decode(input) {
        let _ = tollgate::api::grpc::convert::request(message);
    }
});
