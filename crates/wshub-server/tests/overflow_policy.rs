//! An embedder of the server that picks a lossy overflow policy (drop the newest or the
//! oldest queued message of a slow connection) is refused at start: the protocol promises
//! each offset once or an explicit report of what was lost, and a dropped message would
//! be lost silently. The default (close with 1013) starts.

mod support;

use std::net::SocketAddr;

use support::*;
use wshub::OverflowPolicy;
use wshub_server::{
    app::{StartError, build, serve},
    state::ServerOptions,
};

fn with_policy(policy: OverflowPolicy) -> ServerOptions {
    let mut options = ServerOptions::default();
    options.hub = options.hub.overflow_policy(policy);
    options
}

#[tokio::test]
async fn a_lossy_overflow_policy_is_refused_at_start() {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    for policy in [OverflowPolicy::DropNewest, OverflowPolicy::DropOldest] {
        match within("serve", serve(with_policy(policy), addr)).await {
            Err(StartError::LossyOverflowPolicy(refused)) => assert_eq!(refused, policy),
            Err(other) => panic!("{policy:?}: {other}"),
            Ok(_) => panic!("{policy:?}: the server started"),
        }
        assert!(matches!(
            build(with_policy(policy)),
            Err(StartError::LossyOverflowPolicy(_))
        ));
    }
    let server = within("serve", serve(with_policy(OverflowPolicy::Close), addr))
        .await
        .expect("the default policy starts");
    stop(server).await;
}
