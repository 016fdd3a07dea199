use super::*;
use crate::cache::key::CacheKey;
use crate::request::InferRequest;
use std::sync::Weak;

fn recall(rows: usize) -> Arc<Recall> {
    Arc::new(Recall {
        request: InferRequest::default(),
        key: CacheKey([rows as u8; 32]),
        model: Weak::new(),
        tenant: None,
        outputs: None,
        rows,
    })
}

fn id<'a>(
    model: &'a str,
    version: Option<&'a str>,
    header_length: Option<usize>,
    body: &'a [u8],
) -> BodyId<'a> {
    BodyId {
        model,
        version,
        header_length,
        body,
    }
}

fn remembered_rows(memo: &BodyMemo, id: &BodyId<'_>) -> Option<usize> {
    memo.find(memo.fingerprint(id), id).map(|r| r.recall.rows)
}

#[test]
fn a_remembered_body_is_found_and_any_other_request_is_not() {
    let Some(memo) = BodyMemo::new(1024) else {
        panic!("a memo of 1024 entries is on");
    };
    let body = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1.5]}]}"#;
    let original = id("digits", None, None, body);
    memo.remember(
        memo.fingerprint(&original),
        &original,
        recall(7),
        OutputEncoding::default(),
    );
    assert_eq!(remembered_rows(&memo, &original), Some(7));
    let mut changed_byte = body.to_vec();
    changed_byte[body.len() - 5] = b'6';
    let others = [
        ("another model", id("digits2", None, None, body)),
        ("a version", id("digits", Some("1"), None, body)),
        ("binary framing", id("digits", None, Some(body.len()), body)),
        ("one byte changed", id("digits", None, None, &changed_byte)),
        (
            "a prefix",
            id("digits", None, None, &body[..body.len() - 1]),
        ),
    ];
    for (what, other) in others {
        assert_eq!(remembered_rows(&memo, &other), None, "{what}");
    }
}

#[test]
fn a_shared_fingerprint_never_shares_an_answer() {
    let Some(memo) = BodyMemo::new(1) else {
        panic!("a memo of one entry is on");
    };
    let first = id("digits", None, None, b"first");
    let second = id("digits", None, None, b"second");
    memo.remember(
        memo.fingerprint(&first),
        &first,
        recall(1),
        OutputEncoding::default(),
    );
    // As if the two bodies' fingerprints were equal: the digest still tells them apart.
    assert!(memo.find(memo.fingerprint(&first), &second).is_none());
    // One slot: the newer body takes it.
    memo.remember(
        memo.fingerprint(&second),
        &second,
        recall(2),
        OutputEncoding::default(),
    );
    assert_eq!(remembered_rows(&memo, &second), Some(2));
    assert_eq!(remembered_rows(&memo, &first), None);
}

#[test]
fn the_table_is_sized_in_powers_of_two_and_zero_turns_it_off() {
    assert!(BodyMemo::new(0).is_none());
    for (asked, slots) in [
        (1, 1),
        (1000, 1024),
        (65_536, 65_536),
        (usize::MAX, MAX_BODY_MEMO_ENTRIES),
    ] {
        let memo = BodyMemo::new(asked).map(|m| m.slots.len());
        assert_eq!(memo, Some(slots), "{asked} entries");
    }
}

#[test]
fn fingerprints_separate_fields_and_spread_over_the_slots() {
    let Some(memo) = BodyMemo::new(4096) else {
        panic!("a memo of 4096 entries is on");
    };
    let split = |model, version| memo.fingerprint(&id(model, Some(version), None, b""));
    assert_ne!(split("ab", "c"), split("a", "bc"));
    // Bodies that differ in one number, as repeated load does, land all over the table.
    let mut fingerprints = std::collections::HashSet::new();
    let mut slots = std::collections::HashSet::new();
    for n in 0..10_000 {
        let body = format!(r#"{{"inputs":[{{"data":[{n}.25, 3.5]}}]}}"#);
        let fingerprint = memo.fingerprint(&id("digits", None, None, body.as_bytes()));
        fingerprints.insert(fingerprint);
        slots.insert(fingerprint as usize & memo.mask);
    }
    assert_eq!(fingerprints.len(), 10_000);
    // 10,000 random picks of 4,096 slots leave about 4,096 * e^-2.44 = 357 empty.
    assert!(slots.len() > 3_600, "{} of 4096 slots used", slots.len());
}
