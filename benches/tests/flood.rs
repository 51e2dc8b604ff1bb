//! Handshake floods on 127.0.0.1: with 1,000 connections stalled at each
//! stage of the handshake held open, an honest peer still connects.
//!
//! The listener's handshake timeout is 60 s here, longer than the tests'
//! limit: a listener that made newcomers wait for a slot held by the flood
//! (as plexus did before) fails these tests; only cutting stalled
//! handshakes lets the honest one in. How fast it gets in is measured by
//! `plexus-bench flood`, not asserted here.

use plexus::TransportConfig;
use plexus_bench::flood::{flood, honest_dial, listener, Stall};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);
const FLOOD: usize = 1000;

async fn honest_peer_connects_through(stall: Stall) {
    let _ = env_logger::builder().is_test(true).try_init();
    let config = TransportConfig {
        handshake_timeout: Duration::from_secs(60),
        ..TransportConfig::default()
    };
    let mut l = listener(stall, config).await.expect("a listener");
    let f = flood(stall, l.addr, FLOOD).await.expect("the flood");
    assert_eq!(f.sent, FLOOD);
    let took = honest_dial(stall, l.addr, l.node, LIMIT)
        .await
        .expect("the honest peer connects while the flood is held");
    eprintln!(
        "{stall:?}: {} of {FLOOD} reached their stall; the honest dial took {took:?}",
        f.held
    );
    let conn = tokio::time::timeout(LIMIT, l.incoming.recv())
        .await
        .expect("the listener hands over the honest connection")
        .expect("the listener is running");
    assert_ne!(conn.node, l.node);
    drop(f);
    l.transport.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tcp_connections_do_not_lock_out_an_honest_peer() {
    honest_peer_connects_through(Stall::Silent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_initials_without_follow_up_do_not_lock_out_an_honest_peer() {
    honest_peer_connects_through(Stall::Initial).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_connections_that_never_open_the_stream_do_not_lock_out_an_honest_peer() {
    honest_peer_connects_through(Stall::NoStream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_streams_that_never_prove_the_key_do_not_lock_out_an_honest_peer() {
    honest_peer_connects_through(Stall::NoProof).await;
}
