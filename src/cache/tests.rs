//! Single flight through `Cache::serve`: one computation for concurrent callers, failures shared
//! and not stored, and a caller who gives up cancels nothing.

use super::*;
use crate::config::CacheConfig;
use crate::tensor::{DataType, Tensor};
use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};

fn value() -> CachedValue {
    CachedValue {
        outputs: vec![Tensor {
            name: "y".into(),
            dtype: DataType::Uint8,
            shape: vec![1],
            data: Bytes::from_static(&[7]),
        }]
        .into(),
        cost_usd: 1e-9,
        compute_us: 10,
        rows: 1,
        batch_rows: 1,
        queue_us: 0,
        cold_start_us: 0,
        model: Arc::from("m"),
        ttl: Duration::from_secs(60),
    }
}

/// What a computation under test fails with; the cache only carries it.
#[derive(Debug, Clone, PartialEq)]
enum Failure {
    Boom,
    Abandoned,
}

impl From<Abandoned> for Failure {
    fn from(_: Abandoned) -> Failure {
        Failure::Abandoned
    }
}

type TestCache = Cache<Failure>;

fn key(n: u8) -> CacheKey {
    CacheKey([n; 32])
}

fn model() -> ModelCache {
    ModelCache::new("m", Duration::from_secs(60))
}

#[tokio::test]
async fn a_caller_who_gives_up_does_not_cancel_the_computation() {
    let cache = Arc::new(TestCache::new(&CacheConfig::default()));
    let runs = Arc::new(AtomicUsize::new(0));
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let leader = {
        let cache = cache.clone();
        let runs = runs.clone();
        tokio::spawn(async move {
            cache
                .serve(key(1), &model(), CacheControl::default(), async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    let _ = released.await;
                    Ok(value())
                })
                .await
        })
    };
    // Let the leader start its flight, then have a follower join it.
    while runs.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let follower = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .serve(key(1), &model(), CacheControl::default(), async {
                    panic!("must not run twice")
                })
                .await
        })
    };
    tokio::task::yield_now().await;
    leader.abort();
    let _ = leader.await;
    let _ = release.send(());
    let (got, status) = follower.await.unwrap().unwrap();
    assert_eq!(status, CacheStatus::Coalesced);
    assert_eq!(*got, value());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let (_, status) = cache
        .serve(key(1), &model(), CacheControl::default(), async {
            panic!("it is cached")
        })
        .await
        .unwrap();
    assert_eq!(status, CacheStatus::Hit);
}

#[tokio::test]
async fn a_failure_reaches_every_waiter_and_is_not_stored() {
    let cache = Arc::new(TestCache::new(&CacheConfig::default()));
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let failing = async move {
        let _ = released.await;
        Err(Failure::Boom)
    };
    let first = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .serve(key(2), &model(), CacheControl::default(), failing)
                .await
        })
    };
    tokio::task::yield_now().await;
    let second = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .serve(key(2), &model(), CacheControl::default(), async {
                    Ok(value())
                })
                .await
        })
    };
    tokio::task::yield_now().await;
    let _ = release.send(());
    assert!(first.await.unwrap().is_err());
    assert!(
        second.await.unwrap().is_err(),
        "the follower shares the leader's failure"
    );
    let (_, status) = cache
        .serve(key(2), &model(), CacheControl::default(), async {
            Ok(value())
        })
        .await
        .unwrap();
    assert_eq!(status, CacheStatus::Miss, "the failure was not cached");
}

#[tokio::test]
async fn a_full_tier_stores_an_answer_the_second_time_it_is_computed() {
    // Room for one value: the second key finds the tier full.
    let config = CacheConfig {
        max_bytes: crate::config::ByteSize(u64::from(value().weight()) + 10),
        ..CacheConfig::default()
    };
    let cache = Arc::new(TestCache::new(&config));
    let compute = || async { Ok(value()) };
    let model = model();
    let serve = |n| cache.serve(key(n), &model, CacheControl::default(), compute());
    assert_eq!(serve(1).await.unwrap().1, CacheStatus::Miss);
    cache.settle().await;
    assert!(
        cache.memory.contains_key(&key(1)),
        "stored while there was room"
    );
    assert_eq!(serve(2).await.unwrap().1, CacheStatus::Miss);
    assert!(!cache.memory.contains_key(&key(2)), "new to the doorkeeper");
    assert_eq!(serve(2).await.unwrap().1, CacheStatus::Miss);
    // Offered to moka, whose own admission then weighs it against the entry it would evict.
    assert!(cache.memory.contains_key(&key(2)), "seen before");
}

#[tokio::test]
async fn under_min_uses_two_an_input_is_stored_on_its_second_computation() {
    let cache = Arc::new(TestCache::new(&CacheConfig::default()));
    let second_sight = model().with_min_uses(2);
    let runs = Arc::new(AtomicUsize::new(0));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let runs = runs.clone();
        let (_, status) = cache
            .serve(key(3), &second_sight, CacheControl::default(), async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(value())
            })
            .await
            .unwrap();
        cache.settle().await;
        statuses.push((status, cache.memory.contains_key(&key(3))));
    }
    assert_eq!(
        statuses,
        [
            (CacheStatus::Miss, false),
            (CacheStatus::Miss, true),
            (CacheStatus::Hit, true)
        ],
        "(status, stored) after each of three identical requests"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    // Another model of the same cache keeps the default and stores a first computation.
    let (_, status) = cache
        .serve(key(4), &model(), CacheControl::default(), async {
            Ok(value())
        })
        .await
        .unwrap();
    assert_eq!(status, CacheStatus::Miss);
    assert!(cache.memory.contains_key(&key(4)));
}
