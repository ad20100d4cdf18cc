//! User ids: the auth hook or the application names a connection's user; the hub finds,
//! messages and disconnects a user's connections, and caps how many one user may open.

mod support;

use support::*;
use wshub::{CloseCode, Error, Hub, HubConfig, Identity, Message, Rejection};

/// A hub whose auth hook takes the user from `?user=` (anonymous without it).
fn hub_with_users(config: HubConfig) -> Hub {
    Hub::builder()
        .config(config)
        .auth(|request| async move {
            match request.query_param("user") {
                Some(user) if user == "mallory" => Err(Rejection::unauthorized("not you")),
                Some(user) => Ok(Identity::new(user)),
                None => Ok(Identity::new("")),
            }
        })
        .build()
}

async fn connect_as(addr: std::net::SocketAddr, user: &str) -> Result<Client, u16> {
    connect_with_headers(addr, &format!("/ws?user={user}"), &[]).await
}

#[tokio::test]
async fn a_users_connections_are_found_messaged_and_disconnected_together() {
    let hub = hub_with_users(HubConfig::default());
    let server = start_server(hub.clone()).await;
    let addr = server.local_addr();
    let mut alice_phone = connect_as(addr, "alice").await.expect("alice 1");
    let mut alice_laptop = connect_as(addr, "alice").await.expect("alice 2");
    let mut bob = connect_as(addr, "bob").await.expect("bob");
    let mut anonymous = connect(addr).await;
    eventually("four registered", || hub.connection_count() == 4).await;

    let alices = hub.connections_of_user("alice");
    assert_eq!(alices.len(), 2);
    assert!(alices.iter().all(|c| c.user().as_deref() == Some("alice")));
    assert_eq!(hub.connections_of_user("bob").len(), 1);
    assert!(hub.connections_of_user("nobody").is_empty());
    assert_eq!(hub.user_count(), 2, "the anonymous connection has no user");

    assert_eq!(hub.send_to_user("alice", Message::text("for alice")), 2);
    assert_eq!(hub.send_to_user("nobody", Message::text("lost")), 0);
    hub.broadcast(Message::text("for everyone"));
    assert_eq!(next_text(&mut alice_phone).await, "for alice");
    assert_eq!(next_text(&mut alice_laptop).await, "for alice");
    assert_eq!(
        next_text(&mut bob).await,
        "for everyone",
        "bob did not get alice's message"
    );
    assert_eq!(next_text(&mut anonymous).await, "for everyone");

    assert_eq!(
        hub.disconnect_user("alice", CloseCode::POLICY_VIOLATION, "signed out"),
        2
    );
    assert_eq!(close_code(&mut alice_phone).await, Some(1008));
    assert_eq!(close_code(&mut alice_laptop).await, Some(1008));
    // The client's close reply goes out only when its stream is polled again; dropping the
    // clients ends the TCP connections instead.
    drop((alice_phone, alice_laptop));
    eventually("alice's connections leave the index", || {
        hub.connections_of_user("alice").is_empty() && hub.connection_count() == 2
    })
    .await;
    assert_eq!(hub.user_count(), 1);
    hub.broadcast(Message::text("still here"));
    assert_eq!(next_text(&mut bob).await, "still here");

    close(&mut bob).await;
    drop(bob);
    eventually("bob leaves the index", || hub.user_count() == 0).await;
    stop(server).await;
}

#[tokio::test]
async fn over_the_per_user_cap_gets_429_before_the_upgrade() {
    let hub = hub_with_users(HubConfig::default().max_connections_per_user(2));
    let server = start_server(hub.clone()).await;
    let addr = server.local_addr();
    let mut first = connect_as(addr, "alice").await.expect("alice 1");
    let _second = connect_as(addr, "alice").await.expect("alice 2");
    assert_eq!(connect_as(addr, "alice").await.err(), Some(429));
    // Other users, anonymous connections and refused handshakes are not counted for alice.
    let _bob = connect_as(addr, "bob").await.expect("bob");
    let _anonymous = connect(addr).await;
    let _anonymous_too = connect(addr).await;
    assert_eq!(connect_as(addr, "mallory").await.err(), Some(401));
    assert_eq!(hub.stats().rejected_unavailable, 1);

    close(&mut first).await;
    eventually("alice has one connection", || {
        hub.connections_of_user("alice").len() == 1
    })
    .await;
    let _third = connect_as(addr, "alice")
        .await
        .expect("a freed slot admits alice again");
    assert_eq!(hub.connections_of_user("alice").len(), 2);
    stop(server).await;
}

#[tokio::test]
async fn the_application_registers_a_connections_user() {
    // Mist's `Register(id)`: the first message names the user.
    let hub = Hub::builder()
        .config(HubConfig::default().max_connections_per_user(1))
        .handler(|conn| async move {
            while let Some(msg) = conn.recv().await {
                let Some(name) = msg.as_text() else { continue };
                let reply = match conn.set_user(Some(name)) {
                    Ok(()) => format!("you are {name}"),
                    Err(Error::UserConnectionLimit { user, max }) => {
                        format!("{user} already has {max}")
                    }
                    Err(other) => format!("error {other}"),
                };
                let _ = conn.send_text(reply);
            }
        })
        .build();
    let server = start_server(hub.clone()).await;
    let addr = server.local_addr();
    let mut a = connect(addr).await;
    let mut b = connect(addr).await;
    send_text(&mut a, "carol").await;
    assert_eq!(next_text(&mut a).await, "you are carol");
    send_text(&mut b, "carol").await;
    assert_eq!(next_text(&mut b).await, "carol already has 1");
    assert_eq!(hub.connections_of_user("carol").len(), 1);

    // Renaming moves the connection and frees its old user's slot.
    send_text(&mut a, "dave").await;
    assert_eq!(next_text(&mut a).await, "you are dave");
    assert!(hub.connections_of_user("carol").is_empty());
    send_text(&mut b, "carol").await;
    assert_eq!(next_text(&mut b).await, "you are carol");
    assert_eq!(hub.send_to_user("dave", Message::text("hi dave")), 1);
    assert_eq!(next_text(&mut a).await, "hi dave");

    // An empty id takes a connection out of the index.
    send_text(&mut b, "").await;
    assert_eq!(next_text(&mut b).await, "you are ");
    assert!(hub.connections_of_user("carol").is_empty());
    assert!(hub.connections_of_user("").is_empty());

    close(&mut a).await;
    eventually("dave leaves the index", || {
        hub.connections_of_user("dave").is_empty()
    })
    .await;
    assert_eq!(hub.user_count(), 0);
    stop(server).await;
}

#[tokio::test]
async fn max_connections_zero_means_no_limit() {
    let hub = Hub::new(HubConfig::default().max_connections(0));
    let server = start_server(hub.clone()).await;
    let addr = server.local_addr();
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(connect(addr).await);
    }
    eventually("three registered", || hub.connection_count() == 3).await;
    stop(server).await;
}
