//! The simulator's links mean what real links under QUIC and TCP mean:
//! reliable frames are late, never lost, and stay in order; unreliable ones
//! are lost; a path that loses everything past the idle timeout closes the
//! connection; a dead peer's connections close at the idle timeout.

use crate::common::*;
use plexus::router::StaticRouter;
use plexus::sim::{LinkConfig, Sim, SimConfig};
use plexus::{Network, NodeId, RouteRule, SendError, SendOptions};
use std::sync::Arc;
use std::time::Duration;

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);

/// A and B, each with the probe and a direct route to the other, connected.
fn pair(config: SimConfig) -> Sim {
    let mut sim = Sim::with_config(config);
    for (me, other) in [(A, B), (B, A)] {
        let r = Arc::new(StaticRouter::new(me));
        r.set_route(other, other, 1);
        // No .seed(): the simulator seeds every node itself.
        sim.add_node(me, move |id, _| {
            Network::builder(id, r.clone())
                .behavior(Probe)
                .build()
                .unwrap()
        });
    }
    sim.connect(A, B);
    sim.run_for(Duration::from_secs(1)).unwrap();
    assert_eq!(sim.node(A).unwrap().connections().count(), 1);
    sim
}

fn send(sim: &mut Sim, tag: u64, opts: SendOptions) {
    sim.with_node(A, |net, now| {
        net.send_with(now, PROBE, RouteRule::Node(B), &Tagged(tag), opts)
    })
    .expect("A is alive")
    .expect("sent");
}

fn tags_at_b(sim: &mut Sim) -> Vec<u64> {
    received(sim)
        .into_iter()
        .filter(|(n, _)| *n == B)
        .map(|(_, r)| r.tag)
        .collect()
}

#[test]
fn reliable_frames_on_a_lossy_link_arrive_late_and_in_order_unreliable_ones_are_lost() {
    let mut config = SimConfig::new(11);
    config.link = LinkConfig::default().with_loss(0.3);
    let mut sim = pair(config);
    for tag in 0..1000 {
        send(&mut sim, tag, SendOptions::default());
    }
    sim.run_for(Duration::from_secs(30)).unwrap();
    assert_eq!(tags_at_b(&mut sim), (0..1000).collect::<Vec<_>>());
    let r = sim.report();
    assert!(r.frames_retransmitted > 300, "{r:?}");
    assert_eq!(r.frames_lost, 0);

    for tag in 0..1000 {
        send(&mut sim, tag, SendOptions::unreliable());
    }
    sim.run_for(Duration::from_secs(5)).unwrap();
    let got = tags_at_b(&mut sim).len();
    assert!(
        (600..800).contains(&got),
        "about 70% of datagrams arrive: {got}"
    );
    assert_eq!(sim.report().frames_lost as usize, 1000 - got);
    assert_eq!(sim.node(B).unwrap().connections().count(), 1);
}

#[test]
fn a_short_partition_holds_reliable_frames_and_drops_datagrams() {
    let mut sim = pair(SimConfig::new(12));
    sim.partition(&[vec![A], vec![B]]);
    for tag in 0..10 {
        send(&mut sim, tag, SendOptions::default());
        send(&mut sim, 100 + tag, SendOptions::unreliable());
    }
    sim.run_for(Duration::from_secs(10)).unwrap();
    assert!(tags_at_b(&mut sim).is_empty(), "nothing crosses the cut");
    sim.heal();
    send(&mut sim, 10, SendOptions::default());
    sim.run_for(Duration::from_secs(2)).unwrap();
    assert_eq!(
        tags_at_b(&mut sim),
        (0..=10).collect::<Vec<_>>(),
        "the held frames first, in order, then the new one; no datagram"
    );
    let r = sim.report();
    assert_eq!(r.frames_partitioned, 10);
    assert!(r.frames_held >= 10);
    assert_eq!(sim.node(A).unwrap().connections().count(), 1, "still open");
}

#[test]
fn a_path_that_loses_everything_past_the_idle_timeout_closes_the_connection() {
    let mut config = SimConfig::new(13);
    config.idle_timeout = Duration::from_secs(5);
    let mut sim = pair(config);
    // A partition longer than the idle timeout, with traffic.
    sim.partition(&[vec![A], vec![B]]);
    send(&mut sim, 1, SendOptions::default());
    sim.run_for(Duration::from_secs(4)).unwrap();
    assert_eq!(sim.node(A).unwrap().connections().count(), 1);
    sim.run_for(Duration::from_secs(3)).unwrap();
    assert_eq!(sim.node(A).unwrap().connections().count(), 0);
    assert_eq!(sim.node(B).unwrap().connections().count(), 0);
    assert!(tags_at_b(&mut sim).is_empty());
    assert_eq!(sim.report().idle_closes, 2);

    // A link that loses every transmission does the same.
    sim.heal();
    sim.connect(A, B);
    sim.run_for(Duration::from_secs(1)).unwrap();
    sim.set_link_both(A, B, LinkConfig::default().with_loss(1.0));
    send(&mut sim, 2, SendOptions::default());
    sim.run_for(Duration::from_secs(6)).unwrap();
    assert_eq!(sim.node(A).unwrap().connections().count(), 0);
    assert_eq!(sim.node(B).unwrap().connections().count(), 0);
}

#[test]
fn a_dead_peers_connections_close_at_the_idle_timeout_and_it_cannot_send() {
    let mut config = SimConfig::new(14);
    config.idle_timeout = Duration::from_secs(5);
    let mut sim = pair(config);
    sim.kill(B);
    sim.run_for(Duration::from_secs(4)).unwrap();
    assert_eq!(sim.node(A).unwrap().connections().count(), 1, "no goodbye");
    sim.run_for(Duration::from_secs(2)).unwrap();
    assert_eq!(sim.node(A).unwrap().connections().count(), 0);
    assert_eq!(
        sim.send(B, PROBE, RouteRule::Node(A), &Tagged(1)),
        Err(SendError::NodeDown(B))
    );
}

#[test]
fn nodes_replay_whatever_their_factory_seeds() {
    let run = || {
        let mut config = SimConfig::new(15);
        config.link = LinkConfig::default()
            .with_jitter(Duration::from_millis(5))
            .with_loss(0.2);
        let mut sim = pair(config);
        for tag in 0..200 {
            send(&mut sim, tag, SendOptions::unreliable());
        }
        sim.run_for(Duration::from_secs(5)).unwrap();
        sim.report().trace_hash
    };
    assert_eq!(run(), run());
}

#[test]
fn a_close_during_a_partition_waits_behind_the_held_frames() {
    let mut sim = pair(SimConfig::new(16));
    sim.partition(&[vec![A], vec![B]]);
    for tag in 0..3 {
        send(&mut sim, tag, SendOptions::default());
    }
    let conn = sim.node(A).unwrap().connections().next().unwrap().conn;
    sim.with_node(A, |net, now| net.close(now, conn));
    sim.run_for(Duration::from_secs(5)).unwrap();
    assert_eq!(sim.node(B).unwrap().connections().count(), 1, "held too");
    sim.heal();
    sim.run_for(Duration::from_secs(2)).unwrap();
    assert_eq!(
        tags_at_b(&mut sim),
        vec![0, 1, 2],
        "the frames, then the close"
    );
    assert_eq!(sim.node(B).unwrap().connections().count(), 0);
}

#[test]
fn a_silent_connection_across_a_long_partition_closes_at_the_idle_timeout() {
    let mut config = SimConfig::new(17);
    config.idle_timeout = Duration::from_secs(5);
    let mut sim = pair(config);
    sim.partition(&[vec![A], vec![B]]);
    sim.run_for(Duration::from_secs(4)).unwrap();
    assert_eq!(sim.node(A).unwrap().connections().count(), 1);
    sim.run_for(Duration::from_secs(2)).unwrap();
    assert_eq!(sim.node(A).unwrap().connections().count(), 0);
    assert_eq!(sim.node(B).unwrap().connections().count(), 0);
    // A partition healed in time closes nothing.
    sim.heal();
    sim.connect(A, B);
    sim.run_for(Duration::from_secs(1)).unwrap();
    sim.partition(&[vec![A], vec![B]]);
    sim.run_for(Duration::from_secs(3)).unwrap();
    sim.heal();
    sim.run_for(Duration::from_secs(10)).unwrap();
    assert_eq!(sim.node(A).unwrap().connections().count(), 1);
}
