//! Tollgate: a KServe V2 inference gateway with a prediction cache, dynamic batching on ONNX
//! Runtime and per-request cost metering. See ARCHITECTURE.md for the map.
#![deny(unsafe_code)]

pub mod api;
pub mod backend;
pub mod batch;
pub mod cache;
pub mod config;
pub mod error;
pub mod fleet;
pub mod gateway;
pub mod kserve;
pub mod metering;
pub mod model;
pub mod request;
pub mod server;
pub mod shutdown;
pub mod spec;
pub mod telemetry;
pub mod tensor;
