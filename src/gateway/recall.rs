//! The way back to a cache hit for a request seen again byte for byte, which a front end may
//! keep (the HTTP body memo) instead of decoding the request once more.

use crate::cache::key::CacheKey;
use crate::model::Model;
use crate::request::InferRequest;
use smol_str::SmolStr;
use std::sync::Weak;

/// What a cache hit needs to be answered again without its request being decoded: a front
/// end that recognises the same bytes once more hands this back (`Gateway::infer_recalled`).
/// The answer itself stays in the cache, so purges, expiry and eviction apply as before.
#[derive(Debug)]
pub struct Recall {
    /// The request without its tensors: model and version as asked, id, and the `tags`
    /// parameter, which the usage record carries.
    pub(crate) request: InferRequest,
    pub(crate) key: CacheKey,
    /// The model the key was made for; a reloaded model is another one, so the recall lapses.
    pub(crate) model: Weak<Model>,
    /// The tenant in the key, under `cache.scope = "tenant"`; another caller's tenant lapses it.
    pub(crate) tenant: Option<SmolStr>,
    /// The outputs asked for (`None`: all of them).
    pub(crate) outputs: Option<Vec<String>>,
    pub(crate) rows: usize,
}
