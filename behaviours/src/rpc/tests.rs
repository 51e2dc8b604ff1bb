use super::*;
use plexus_network::sim::{LinkConfig, Sim};
use plexus_network::{Network, NodeId, RejectReason, RpcId};
use plexus_router::dv;
use std::sync::Arc;

type Squares = Behaviour<u64, u64>;

const A: NodeId = NodeId(0x10);
const B: NodeId = NodeId(0x20);
const C: NodeId = NodeId(0x30);

/// A line a – b – c on the distance-vector router; `make` builds each
/// node's rpc behaviour.
fn line(make: impl Fn(NodeId) -> Squares + Clone + 'static) -> Sim {
    let mut sim = Sim::new(7);
    sim.set_default_link(LinkConfig::default().with_latency(Duration::from_millis(10)));
    for id in [A, B, C] {
        let make = make.clone();
        sim.add_node(id, move |id, seed| {
            let router = Arc::new(dv::DvRouter::new(id));
            Network::builder(id, router.clone())
                .seed(seed)
                .behavior(dv::Behaviour::new(router, dv::Config::default()))
                .behavior(make(id))
                .build()
                .expect("distinct services")
        });
    }
    sim.connect(A, B);
    sim.connect(B, C);
    sim.run_for(Duration::from_secs(3)).unwrap();
    sim
}

fn squares(_: NodeId) -> Squares {
    Behaviour::new(Config::default()).with_responder(|_, n: u64| {
        if n == 13 {
            return Err("unlucky".into());
        }
        if n == 666 {
            panic!("the responder broke");
        }
        Ok(n * n)
    })
}

fn call(sim: &mut Sim, from: NodeId, to: RouteRule, n: u64) -> RpcId {
    sim.rpc_start::<Squares>(from, Request::call(to, n))
        .expect("node alive")
        .expect("behaviour present")
}

fn reply(sim: &mut Sim, node: NodeId, id: RpcId) -> Option<Result<u64, CallError>> {
    sim.take_answer::<Response<u64>>(node, id)
        .map(|r| r.expect("the behaviour answers").into_reply())
}

fn settle(sim: &mut Sim) {
    sim.run_for(Duration::from_secs(1)).unwrap();
}

#[test]
fn calls_reach_a_node_and_a_key_two_hops_away_and_this_node() {
    let mut sim = line(squares);
    let by_node = call(&mut sim, A, RouteRule::Node(C), 7);
    let by_key = call(&mut sim, A, RouteRule::Closest(NodeId(0x31)), 8);
    let own = call(&mut sim, A, RouteRule::Node(A), 9);
    settle(&mut sim);
    assert_eq!(reply(&mut sim, A, by_node), Some(Ok(49)));
    assert_eq!(reply(&mut sim, A, by_key), Some(Ok(64)));
    assert_eq!(reply(&mut sim, A, own), Some(Ok(81)));
    let served = sim.node(C).unwrap().behavior::<Squares>().unwrap().stats();
    assert_eq!(served.requests_received, 2);
}

#[test]
fn refusals_panics_and_missing_routes_come_back_typed() {
    let mut sim = line(squares);
    let refused = call(&mut sim, A, RouteRule::Node(C), 13);
    let broke = call(&mut sim, A, RouteRule::Node(C), 666);
    let nowhere = call(&mut sim, A, RouteRule::Node(NodeId(0x99)), 1);
    // The unroutable call fails in the input that sent it.
    assert_eq!(
        reply(&mut sim, A, nowhere),
        Some(Err(CallError::NoRoute(DropReason::Rejected(
            RejectReason::NoRoute
        ))))
    );
    settle(&mut sim);
    assert_eq!(
        reply(&mut sim, A, refused),
        Some(Err(CallError::Refused("unlucky".into())))
    );
    match reply(&mut sim, A, broke) {
        Some(Err(CallError::RemoteFailed(why))) => assert!(why.contains("broke"), "{why}"),
        other => panic!("{other:?}"),
    }
    // The responder's panic cost nothing else: C still answers.
    let after = call(&mut sim, A, RouteRule::Node(C), 3);
    settle(&mut sim);
    assert_eq!(reply(&mut sim, A, after), Some(Ok(9)));
}

#[test]
fn a_dead_remote_times_out_and_a_late_answer_is_discarded_and_counted() {
    // C's application answers by hand: it gets the request as an event.
    let mut sim = line(|id| {
        if id == C {
            Behaviour::new(Config::default())
        } else {
            Behaviour::new(Config::default().with_timeout(Duration::from_millis(500)))
        }
    });
    let id = call(&mut sim, A, RouteRule::Node(C), 5);
    settle(&mut sim);
    assert_eq!(
        reply(&mut sim, A, id),
        Some(Err(CallError::Timeout(Duration::from_millis(500))))
    );
    // C answers now, too late.
    let events = sim.take_events();
    let (inbound, from) = events
        .into_iter()
        .filter(|e| e.node == C)
        .find_map(|e| match e.event.downcast::<Event<u64>>() {
            Ok(Event::Request { id, from, request }) => {
                assert_eq!(request, 5);
                Some((id, from))
            }
            Err(_) => None,
        })
        .expect("C's application saw the request");
    assert_eq!(from, A);
    let r = sim.rpc::<Squares>(C, Request::respond(inbound, 25));
    assert_eq!(r, Ok(Some(Response::Responded)));
    // Answering twice is refused: the request is no longer open.
    assert!(sim
        .rpc::<Squares>(C, Request::respond(inbound, 25))
        .is_err());
    settle(&mut sim);
    let st = sim.node(A).unwrap().behavior::<Squares>().unwrap().stats();
    assert_eq!((st.calls.timed_out, st.calls.late_answers), (1, 1));

    // A dead node: the call times out, nothing else.
    sim.kill(C);
    let id = call(&mut sim, A, RouteRule::Node(C), 5);
    sim.run_for(Duration::from_millis(600)).unwrap();
    assert!(matches!(
        reply(&mut sim, A, id),
        Some(Err(CallError::Timeout(_)) | Err(CallError::NoRoute(_)))
    ));
}

#[test]
fn calls_past_the_bound_wait_for_a_slot_and_past_the_queue_are_refused() {
    let limits = Limits {
        max_in_flight: 2,
        max_per_peer: 2,
    };
    let mut sim = line(move |id| {
        if id == A {
            Behaviour::new(Config::default().with_limits(limits).with_max_waiting(3))
        } else {
            squares(id)
        }
    });
    let ids: Vec<RpcId> = (0..6)
        .map(|n| call(&mut sim, A, RouteRule::Node(C), n))
        .collect();
    let (open, waiting) = sim
        .node(A)
        .unwrap()
        .behavior::<Squares>()
        .unwrap()
        .open_calls();
    assert_eq!((open, waiting), (2, 3));
    // The sixth found the queue full.
    assert_eq!(
        reply(&mut sim, A, ids[5]),
        Some(Err(CallError::TooManyInFlight {
            scope: Scope::Node,
            limit: 2
        }))
    );
    settle(&mut sim);
    for (n, id) in ids[..5].iter().enumerate() {
        assert_eq!(reply(&mut sim, A, *id), Some(Ok((n * n) as u64)));
    }
    let st = sim.node(A).unwrap().behavior::<Squares>().unwrap().stats();
    assert_eq!((st.waited, st.calls.refused_busy), (3, 0));
}

#[test]
fn a_service_call_reaches_the_nearest_node_that_serves() {
    // Only C serves; A and B call.
    let mut sim = line(|id| {
        if id == C {
            squares(id)
        } else {
            Behaviour::new(Config::default().with_serving(false))
        }
    });
    let id = call(&mut sim, A, RouteRule::Service, 4);
    // A request that reaches a client by node is refused, not answered.
    let to_client = call(&mut sim, A, RouteRule::Node(B), 4);
    settle(&mut sim);
    assert_eq!(reply(&mut sim, A, id), Some(Ok(16)));
    assert!(matches!(
        reply(&mut sim, A, to_client),
        Some(Err(CallError::Refused(_)))
    ));
}
