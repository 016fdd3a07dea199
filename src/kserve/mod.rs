//! The KServe V2 wire formats that both sides of the gateway speak: the front ends read
//! requests in them and the upstream client writes requests in them. Protocol buffer types,
//! typed tensor contents, and JSON tensor data. Nothing here knows hyper, tonic's servers, or
//! any layer above.

pub mod json;
pub mod typed;

pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("inference");
}
