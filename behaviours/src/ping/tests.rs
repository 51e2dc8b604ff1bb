use super::*;
use plexus_network::sim::{LinkConfig, Sim};
use plexus_network::{Instant, Network, NodeId};
use plexus_router::StaticRouter;
use std::sync::Arc;
use std::time::Duration;

fn node(cfg: Config) -> impl FnMut(NodeId, u64) -> Network {
    move |id, seed| {
        Network::builder(id, Arc::new(StaticRouter::new(id)))
            .seed(seed)
            .behavior(Behaviour::new(cfg.clone()))
            .build()
            .expect("one behaviour")
    }
}

fn ping_events(sim: &mut Sim) -> Vec<(Instant, NodeId, Event)> {
    sim.take_events()
        .into_iter()
        .filter_map(|e| {
            let (at, node) = (e.at, e.node);
            e.event.downcast::<Event>().ok().map(|ev| (at, node, ev))
        })
        .collect()
}

#[test]
fn measures_rtt_of_twice_the_latency() {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut sim = Sim::new(1);
    sim.set_default_link(LinkConfig::default().with_latency(Duration::from_millis(15)));
    let (a, b) = (NodeId(1), NodeId(2));
    sim.add_node(a, node(Config::default()));
    sim.add_node(b, node(Config::default()));
    sim.connect(a, b);
    sim.run_for(Duration::from_secs(5)).unwrap();

    let events = ping_events(&mut sim);
    let rtts: Vec<Duration> = events
        .iter()
        .filter(|(_, n, _)| *n == a)
        .filter_map(|(_, _, e)| e.result.ok())
        .collect();
    assert!(rtts.len() >= 4, "{events:?}");
    assert!(
        rtts.iter().all(|r| *r == Duration::from_millis(30)),
        "{rtts:?}"
    );

    let Some(Response::Stats(stats)) = sim.rpc::<Behaviour>(a, Request::Stats).unwrap() else {
        panic!("stats answered at once");
    };
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].peer, b);
    let rtt = stats[0].rtt.expect("measured");
    assert_eq!(rtt.min, Duration::from_millis(30));
    assert_eq!(rtt.smoothed, Duration::from_millis(30));
    assert_eq!(rtt.samples as usize, rtts.len());
}

#[test]
fn reports_a_dead_neighbour_within_the_timeout_and_closes() {
    let _ = env_logger::builder().is_test(true).try_init();
    let timeout = Duration::from_secs(3);
    let cfg = Config::default().with_timeout(timeout);
    let mut sim = Sim::new(2);
    let (a, b) = (NodeId(1), NodeId(2));
    sim.add_node(a, node(cfg.clone()));
    sim.add_node(b, node(cfg));
    sim.connect(a, b);
    sim.run_for(Duration::from_secs(2)).unwrap();
    assert_eq!(sim.node(a).unwrap().connections().count(), 1);
    ping_events(&mut sim);

    let killed_at = sim.now();
    sim.kill(b);
    sim.run_for(Duration::from_secs(10)).unwrap();
    let failures: Vec<_> = ping_events(&mut sim)
        .into_iter()
        .filter(|(_, _, e)| e.result.is_err())
        .collect();
    assert_eq!(failures.len(), 1, "{failures:?}");
    let (at, at_node, ev) = &failures[0];
    assert_eq!((*at_node, ev.peer), (a, b));
    let interval = Config::default().interval;
    assert!(
        *at - killed_at <= timeout + interval,
        "detected after {:?}",
        *at - killed_at
    );
    assert!(*at - killed_at > timeout - Duration::from_secs(1));
    assert_eq!(
        sim.node(a).unwrap().connections().count(),
        0,
        "closed on failure"
    );
}

#[test]
fn a_neighbour_that_answers_again_recovers() {
    let cfg = Config::default()
        .with_timeout(Duration::from_secs(2))
        .with_close_on_failure(false);
    let mut sim = Sim::new(3);
    let (a, b) = (NodeId(1), NodeId(2));
    sim.add_node(a, node(cfg.clone()));
    sim.add_node(b, node(cfg));
    sim.connect(a, b);
    sim.run_for(Duration::from_secs(2)).unwrap();
    sim.partition(&[vec![a], vec![b]]);
    sim.run_for(Duration::from_secs(4)).unwrap();
    sim.heal();
    sim.run_for(Duration::from_secs(3)).unwrap();
    let events = ping_events(&mut sim);
    let a_events: Vec<_> = events.iter().filter(|(_, n, _)| *n == a).collect();
    let fail = a_events
        .iter()
        .position(|(_, _, e)| e.result.is_err())
        .expect("a failure");
    assert!(
        a_events[fail..].iter().any(|(_, _, e)| e.result.is_ok()),
        "RTTs again after the heal"
    );
    assert_eq!(sim.node(a).unwrap().connections().count(), 1, "kept open");
}
