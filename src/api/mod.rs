//! Front ends: the only code that knows wire types (hyper, JSON bodies, protobuf). Each decodes
//! into `request::InferRequest`, calls the gateway, and encodes the answer.

pub mod deferred;
pub mod grpc;
pub mod http;
mod limits;
mod metadata;
mod params;
mod statistics;
mod status;
pub mod tls;
