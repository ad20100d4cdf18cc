//! The shared suite against the memory backplane.

mod suite;

use std::sync::Arc;

use suite::{Ask, Reaction};
use wshub_backplane::{Answer, Backplane, MemoryBackplane, MemoryConfig, Routed};

#[tokio::test]
async fn memory_backplane_passes_the_single_node_suite() {
    let factory: suite::Factory = Arc::new(|node_id| {
        Box::pin(async move {
            Arc::new(MemoryBackplane::new(MemoryConfig {
                node_id,
                ..MemoryConfig::default()
            })) as Arc<dyn Backplane>
        })
    });
    suite::single_node(factory).await;
}

#[tokio::test]
async fn memory_backplane_routes_only_to_its_own_node() {
    let backplane = MemoryBackplane::new(MemoryConfig {
        node_id: 5,
        ..MemoryConfig::default()
    });
    let backplane: Arc<dyn Backplane> = Arc::new(backplane);
    let mut events = backplane.take_events().unwrap();
    let own = suite::client(5, 1);
    // The node's answer comes back, as from another node.
    for (reaction, expected) in [
        (Reaction::Answer(Answer::Delivered), Routed::Delivered),
        (
            Reaction::Answer(Answer::NoSuchConnection),
            Routed::NoSuchConnection,
        ),
        (Reaction::Drop, Routed::NoSuchConnection),
    ] {
        let (_, routed) = suite::ask(&backplane, Ask::Send(own, "x"), &mut events, reaction).await;
        assert_eq!(routed, expected);
    }
    let (_, routed) = suite::ask(
        &backplane,
        Ask::Disconnect(own),
        &mut events,
        Reaction::Answer(Answer::Delivered),
    )
    .await;
    assert_eq!(routed, Routed::Delivered);
    let other = suite::client(6, 1);
    let routed = backplane.disconnect(other).await.unwrap();
    assert_eq!(routed, Routed::NoSuchNode);
}

/// `tests/redis.rs` and `tests/nats.rs` exist only with the crate's `redis` and `nats`
/// features (`cargo test --workspace` turns them on through wshub-server; `cargo test -p
/// wshub-backplane` alone does not): without them those suites are skipped as loudly as
/// when their servers are missing, and fail the same way under `WSHUB_REQUIRE_BACKPLANES`.
#[test]
fn the_redis_and_nats_suites_are_compiled() {
    for (feature, on) in [
        ("redis", cfg!(feature = "redis")),
        ("nats", cfg!(feature = "nats")),
    ] {
        if !on {
            suite::skipped(&format!(
                "\n*** SKIPPED: the {feature} backplane tests are not compiled without feature \
                 `{feature}` (cargo test -p wshub-backplane --all-features, or --workspace) ***\n"
            ));
        }
    }
}
