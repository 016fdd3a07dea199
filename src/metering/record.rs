//! One usage record: everything the ledger keeps about one accepted request (or one stretch of
//! a model instance's idle time, under the tenant `__idle__`), and the form of request ids.

use smol_str::SmolStr;

/// Tenant name under which idle device time is recorded: charged to the model, not to anyone.
pub const IDLE_TENANT: &str = "__idle__";
/// Tenant of every request when authentication is off.
pub const ANONYMOUS_TENANT: &str = "anonymous";

/// The text fields are `Text`: filled on a request thread from static or shared strings, and
/// dropped on the ledger's thread without freeing anything the request thread allocated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageRecord {
    /// Ends with `-` and `time_ms` in hex (see `request_id`), which is how the ledger finds it.
    pub request_id: SmolStr,
    /// When the request arrived, in milliseconds since the Unix epoch (UTC).
    pub time_ms: i64,
    pub tenant: SmolStr,
    pub team: SmolStr,
    pub project: SmolStr,
    /// Allowed tags only (keys listed in config), sorted by key.
    pub tags: Vec<(String, String)>,
    pub model: SmolStr,
    pub version: SmolStr,
    /// "http", "grpc", or "internal" for idle records.
    pub protocol: SmolStr,
    /// "hit", "miss", "coalesced", "bypass", or "none" when the request failed before the cache.
    pub cache: SmolStr,
    pub rows: u32,
    pub batch_size: u32,
    pub queue_us: u64,
    pub compute_us: u64,
    /// Time from arrival to answer at the gateway.
    pub latency_us: u64,
    pub cost_usd: f64,
    pub saved_usd: f64,
    /// "success", an error class such as "bad_request" or "timeout", or "idle".
    pub outcome: SmolStr,
    /// The device that ran it ("cpu", "cuda:0"); for FOCUS resource columns.
    pub device: SmolStr,
    /// The lane it was served in: `LANE_REALTIME`, or `LANE_DEMOTED` for a tenant over a
    /// `demote` budget; empty for idle records.
    pub lane: SmolStr,
}

/// The lane of a request answered as it comes.
pub const LANE_REALTIME: &str = "realtime";
/// The lane of a request sent to the lowest priority because its tenant is over budget.
pub const LANE_DEMOTED: &str = "demoted";
/// The lane of a deferred job's row (`POST /v1/batches`), run on idle capacity.
pub const LANE_DEFERRED: &str = "deferred";

/// Hex digits the time at the end of an id takes at least: 11 reach the year 2527, so ids of
/// the same era have the same length.
const TIME_DIGITS: usize = 11;
/// Hex digits of the request counter in a gateway id (more once it passes 2^32).
const COUNTER_DIGITS: usize = 8;

/// A gateway request id, `{prefix}-{counter}-{time_ms}` in lowercase hex, e.g.
/// `4f9a3da8-00000001-1a2246309fb`. Built digit by digit: it is made for every request.
pub fn request_id(prefix: &str, counter: u64, time_ms: i64) -> String {
    let mut id = String::with_capacity(prefix.len() + 2 + 2 * 16);
    id.push_str(prefix);
    id.push('-');
    push_hex(&mut id, counter, COUNTER_DIGITS);
    push_id_time(&mut id, time_ms);
    id
}

/// Ends an id with `-` and `time_ms` in lowercase hex, at least `TIME_DIGITS` of them (a
/// negative time, which no clock here gives, as its 16 two's-complement digits). Every id the
/// gateway writes ends so: the ledger then finds a record by id through its time index.
pub fn push_id_time(id: &mut String, time_ms: i64) {
    id.push('-');
    // The bit pattern, so that every i64 survives the round trip through `id_time`.
    push_hex(id, time_ms as u64, TIME_DIGITS);
}

/// The arrival time at the end of an id written by `push_id_time`: after its last `-`, 11 to
/// 16 lowercase hex digits. `None` for any other id, such as those of ledgers from before
/// schema 2, whose time must then be found another way.
pub fn id_time(id: &str) -> Option<i64> {
    let (_, hex) = id.rsplit_once('-')?;
    let digits_ok = hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !(TIME_DIGITS..=16).contains(&hex.len()) || !digits_ok {
        return None;
    }
    // Back from the bit pattern `push_id_time` wrote.
    u64::from_str_radix(hex, 16).ok().map(|bits| bits as i64)
}

/// Appends `value` in lowercase hex, zero-padded to `min_digits` (at most 16).
fn push_hex(out: &mut String, value: u64, min_digits: usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let needed = (64 - value.leading_zeros() as usize).div_ceil(4);
    let digits = needed.max(min_digits).clamp(1, 16);
    for i in (0..digits).rev() {
        out.push(char::from(DIGITS[((value >> (4 * i)) & 0xf) as usize]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_ids_carry_their_time() {
        let cases: &[(&str, u64, i64, &str)] = &[
            (
                "4f9a3da8",
                1,
                1_795_906_800_123,
                "4f9a3da8-00000001-1a2246309fb",
            ),
            ("p", 0xfeed_beef_cafe, 0, "p-feedbeefcafe-00000000000"),
            ("p", 0, 1, "p-00000000-00000000001"),
            ("p", 7, i64::MAX, "p-00000007-7fffffffffffffff"),
            ("p", 7, -1, "p-00000007-ffffffffffffffff"),
        ];
        for &(prefix, counter, time_ms, want) in cases {
            let id = request_id(prefix, counter, time_ms);
            assert_eq!(id, want);
            assert_eq!(
                id,
                format!("{prefix}-{counter:08x}-{:011x}", time_ms as u64)
            );
            assert_eq!(id_time(&id), Some(time_ms), "{id}");
        }
    }

    #[test]
    fn ids_without_a_time_are_recognised() {
        let cases: &[(&str, Option<i64>)] = &[
            // Gateway and idle ids of schema 1.
            ("4f9a3da8-00000001", None),
            ("idle-digits-1-0-1795906800000", Some(0x1795906800000)),
            ("idle-digits-1-0-19c3b7a1e00", Some(0x19c3b7a1e00)),
            ("no-dash-here", None),
            ("plain", None),
            ("", None),
            ("x-", None),
            ("x-0000000000G", None),
            ("x-19C3B7A1E00", None),
            ("x-+9c3b7a1e00", None),
            ("x-00000000000000000", None),
            ("x-0000000000a", Some(10)),
        ];
        for &(id, want) in cases {
            assert_eq!(id_time(id), want, "{id}");
        }
    }
}
