//! A deferred job's row on the request path: served like its tenant's request, in the
//! deferred lane and at `deferred.price_factor`, its usage record handed back unwritten.

use super::{trace, Entry, Error, Gateway, Work};
use crate::metering::identity::Caller;
use crate::metering::record::UsageRecord;
use crate::request::{InferRequest, InferResponse, Protocol};
use std::time::Instant;

impl Gateway {
    /// Serves a deferred job's row as a request of `caller` in the deferred lane, priced at
    /// `deferred.price_factor`. The usage record comes back unwritten, so that the job store
    /// commits it together with the row's answer; `None` when the row was refused before it
    /// was accepted (it is then simply tried again later).
    pub async fn infer_deferred(
        &self,
        mut request: InferRequest,
        caller: Caller,
    ) -> (Result<InferResponse, Error>, Option<UsageRecord>) {
        let started = Instant::now();
        request.options.deferred = true;
        request.options.recall = false;
        let mut record = None;
        let entry = Entry::Deferred {
            caller,
            record: &mut record,
        };
        let work = self.run(Work::Compute(request), started, Protocol::Http, entry);
        let result = trace::serve("deferred", None, work).await;
        (result.map(|reply| reply.response), record)
    }
}
