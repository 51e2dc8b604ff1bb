//! The core on its own: one `Network`, driven by hand.

use super::*;
use crate::{
    Answer, BehaviorAgent, ConnectionAgent, ConnectionHandler, Incoming, NoHandler, RejectReason,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const ME: NodeId = NodeId(1);
const ECHO: ServiceId = ServiceId(10);
const BOUNCE: ServiceId = ServiceId(11);
const BOOM: ServiceId = ServiceId(12);

/// Routes to neighbours by a fixed table; everything else is unroutable.
struct Table(NodeId, BTreeMap<NodeId, NodeId>);

impl RouterTable for Table {
    fn path_to_node(&self, dest: NodeId) -> RouteAction {
        if dest == self.0 {
            return RouteAction::Local;
        }
        match self.1.get(&dest) {
            Some(n) => RouteAction::Next(*n),
            None => RouteAction::Reject(RejectReason::NoRoute),
        }
    }
    fn path_to_key(&self, _: NodeId) -> RouteAction {
        RouteAction::Local
    }
    fn path_to_service(&self, _: ServiceId) -> RouteAction {
        RouteAction::Local
    }
}

fn router(routes: &[(u64, u64)]) -> Arc<Table> {
    router_of(ME, routes)
}

/// [`router`] for a node other than [`ME`].
fn router_of(local: NodeId, routes: &[(u64, u64)]) -> Arc<Table> {
    Arc::new(Table(
        local,
        routes
            .iter()
            .map(|&(d, n)| (NodeId(d), NodeId(n)))
            .collect(),
    ))
}

/// Echoes what it receives to its source; emits a tick on each timer and
/// re-arms it; answers RPCs with a number from the node's RNG.
#[derive(Default)]
struct Echo {
    period: Option<Duration>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
enum EchoMsg {
    Ping(u32),
    Pong(u32),
}

#[derive(Debug, PartialEq, Eq)]
enum EchoEvent {
    Pong(NodeId, u32),
    Tick,
}

impl NetworkBehavior for Echo {
    type Msg = EchoMsg;
    type Handler = NoHandler<EchoMsg>;
    type Event = EchoEvent;
    type Rpc = ((), u64);

    fn service_id(&self) -> ServiceId {
        ECHO
    }
    fn on_connected(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        _: ConnectionInfo,
    ) -> Option<NoHandler<EchoMsg>> {
        if let Some(p) = self.period {
            agent.schedule_after(p, 1);
        }
        None
    }
    fn on_message(&mut self, agent: &mut BehaviorAgent<'_, Self>, msg: Incoming<EchoMsg>) {
        match msg.msg {
            EchoMsg::Ping(n) => agent.send(RouteRule::Node(msg.source), EchoMsg::Pong(n)),
            EchoMsg::Pong(n) => agent.emit(EchoEvent::Pong(msg.source, n)),
        }
    }
    fn on_timer(&mut self, agent: &mut BehaviorAgent<'_, Self>, token: u64) {
        assert_eq!(token, 1);
        agent.emit(EchoEvent::Tick);
        if let Some(p) = self.period {
            agent.schedule_after(p, 1);
        }
    }
    fn on_rpc(&mut self, agent: &mut BehaviorAgent<'_, Self>, _: (), answer: Answer<u64>) {
        let n = agent.rng().next_u64();
        agent.answer(answer, n);
    }
}

/// A behaviour and its handler that bounce an event forever once a
/// message starts them.
struct Bounce;

struct BounceHandler;

impl ConnectionHandler for BounceHandler {
    type Msg = u8;
    type FromBehavior = u64;
    type ToBehavior = u64;
    fn on_message(&mut self, agent: &mut ConnectionAgent<'_, Self>, _: Incoming<u8>) {
        agent.emit_to_behavior(0);
    }
    fn on_behavior_event(&mut self, agent: &mut ConnectionAgent<'_, Self>, n: u64) {
        agent.emit_to_behavior(n + 1);
        // Re-armed on every bounce: the last action queued when the budget
        // runs out, and one the core must still apply.
        agent.schedule_after(Duration::from_secs(5), 9);
    }
    fn on_timer(&mut self, agent: &mut ConnectionAgent<'_, Self>, token: u64) {
        assert_eq!(token, 9);
        agent.send(0);
    }
}

impl NetworkBehavior for Bounce {
    type Msg = u8;
    type Handler = BounceHandler;
    type Event = ();
    type Rpc = ();
    fn service_id(&self) -> ServiceId {
        BOUNCE
    }
    fn on_connected(
        &mut self,
        _: &mut BehaviorAgent<'_, Self>,
        _: ConnectionInfo,
    ) -> Option<BounceHandler> {
        Some(BounceHandler)
    }
    fn on_handler_event(&mut self, agent: &mut BehaviorAgent<'_, Self>, c: ConnectionInfo, n: u64) {
        agent.send_to_handler(c.conn, n + 1);
    }
}

/// Panics on a message; counts its timer otherwise.
struct Boom;

impl NetworkBehavior for Boom {
    type Msg = u8;
    type Handler = NoHandler<u8>;
    type Event = ();
    type Rpc = ((), ());
    fn service_id(&self) -> ServiceId {
        BOOM
    }
    fn on_connected(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        _: ConnectionInfo,
    ) -> Option<NoHandler<u8>> {
        agent.schedule_after(Duration::from_secs(1), 7);
        None
    }
    fn on_message(&mut self, agent: &mut BehaviorAgent<'_, Self>, msg: Incoming<u8>) {
        agent.emit(());
        panic!("boom on {}", msg.msg);
    }
    fn on_rpc(&mut self, _: &mut BehaviorAgent<'_, Self>, _: (), answer: Answer<()>) {
        // Never answers: the RPC stays open until the behaviour fails.
        let _ = answer;
    }
}

fn outputs(net: &mut Network) -> Vec<Output> {
    std::iter::from_fn(|| net.poll_output()).collect()
}

fn frame(service: ServiceId, rule: RouteRule, source: NodeId, msg: &impl Serialize) -> Vec<u8> {
    let payload = postcard::to_allocvec(msg).unwrap();
    let h = Header {
        service,
        rule,
        ttl: 8,
        source,
        unreliable: false,
    };
    Frame::encode(&h, &payload).unwrap()
}

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

#[test]
fn a_bad_payload_closes_only_its_authors_connection() {
    let mut net = Network::builder(ME, router(&[(4, 3)]))
        .seed(1)
        .behavior(Echo::default())
        .build()
        .unwrap();
    let c2 = net.handle_incoming(t(0), NodeId(2), None).unwrap();
    let c3 = net.handle_incoming(t(0), NodeId(3), None).unwrap();
    outputs(&mut net);
    // Node 4's bad payload, forwarded by 3: dropped, 3 stays.
    net.handle_frame(
        t(1),
        c3,
        &frame(ECHO, RouteRule::Node(ME), NodeId(4), &[0xffu8; 3]),
    );
    let out = outputs(&mut net);
    assert!(
        matches!(
            out.as_slice(),
            [
                Output::Dropped(DropReport {
                    reason: DropReason::BadPayload,
                    source: NodeId(4),
                    ..
                }),
                // The drop notice, back to 4 through 3.
                Output::Send { conn, .. },
            ] if *conn == c3
        ),
        "{out:?}"
    );
    assert_eq!(net.connections().count(), 2);
    // 2's own bad payload: dropped and 2's connection closed, 3's kept.
    net.handle_frame(
        t(2),
        c2,
        &frame(ECHO, RouteRule::Direct, NodeId(2), &[0xffu8; 3]),
    );
    let out = outputs(&mut net);
    assert!(out.iter().any(|o| matches!(o, Output::Close { conn, reason: CloseReason::BadPayload(ECHO) } if *conn == c2)), "{out:?}");
    let left: Vec<ConnId> = net.connections().map(|c| c.conn).collect();
    assert_eq!(left, vec![c3]);
    // A header that does not decode closes that connection only.
    net.handle_frame(t(3), c3, b"\x09garbage");
    let out = outputs(&mut net);
    assert!(
        matches!(
            out.as_slice(),
            [Output::Close {
                reason: CloseReason::Protocol(_),
                ..
            }]
        ),
        "{out:?}"
    );
    assert_eq!(net.stats().protocol_errors, 1);
}

#[test]
fn a_direct_message_naming_another_source_closes_its_connection_undelivered() {
    let mut net = Network::builder(ME, router(&[]))
        .seed(1)
        .behavior(Echo::default())
        .build()
        .unwrap();
    let c2 = net.handle_incoming(t(0), NodeId(2), None).unwrap();
    let c3 = net.handle_incoming(t(0), NodeId(3), None).unwrap();
    outputs(&mut net);
    // 2 writes 3's id as the source of a one-hop message.
    net.handle_frame(
        t(1),
        c2,
        &frame(ECHO, RouteRule::Direct, NodeId(3), &EchoMsg::Ping(7)),
    );
    let out = outputs(&mut net);
    assert!(
        matches!(
            out.as_slice(),
            [Output::Close {
                conn,
                reason: CloseReason::ForgedSource { claimed: NodeId(3) },
            }] if *conn == c2
        ),
        "closed, and nothing delivered or answered: {out:?}"
    );
    assert_eq!(net.stats().protocol_errors, 1);
    let left: Vec<ConnId> = net.connections().map(|c| c.conn).collect();
    assert_eq!(left, vec![c3]);
}

#[test]
fn a_behaviour_that_bounces_forever_is_cut_off_and_the_others_go_on() {
    let mut net = Network::builder(ME, router(&[(2, 2)]))
        .config(NetworkConfig {
            max_actions_per_input: 1_000,
            ..NetworkConfig::default()
        })
        .seed(1)
        .behavior(Bounce)
        .behavior(Echo {
            period: Some(Duration::from_millis(100)),
        })
        .build()
        .unwrap();
    let c = net.handle_incoming(t(0), NodeId(2), None).unwrap();
    outputs(&mut net);
    // One message starts the bounce; the input ends anyway.
    net.handle_frame(t(1), c, &frame(BOUNCE, RouteRule::Direct, NodeId(2), &1u8));
    let s = net.stats();
    assert_eq!(s.budget_overflows, 1);
    assert!(s.actions_discarded >= 1);
    // Again: counted again, still bounded.
    net.handle_frame(t(2), c, &frame(BOUNCE, RouteRule::Direct, NodeId(2), &1u8));
    assert_eq!(net.stats().budget_overflows, 2);
    // Echo still answers and its timer still fires.
    net.handle_frame(
        t(3),
        c,
        &frame(ECHO, RouteRule::Node(ME), NodeId(2), &EchoMsg::Ping(5)),
    );
    let out = outputs(&mut net);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Send { conn, .. } if *conn == c)),
        "{out:?}"
    );
    net.handle_timeout(t(100));
    let ticks = outputs(&mut net)
        .into_iter()
        .filter(|o| matches!(o, Output::Event(e) if e.downcast_ref::<EchoEvent>() == Some(&EchoEvent::Tick)))
        .count();
    assert_eq!(ticks, 1);
    // The bouncer's timer was set although its other actions were cut off.
    net.handle_timeout(t(2) + Duration::from_secs(5));
    let out = outputs(&mut net);
    assert!(
        out.iter().any(|o| matches!(o, Output::Send { frame, .. } if crate::wire::peek_service(frame) == Some(BOUNCE))),
        "{out:?}"
    );
}

#[test]
fn a_panicking_behaviour_is_disabled_and_reported_and_the_node_goes_on() {
    let mut net = Network::builder(ME, router(&[(2, 2)]))
        .seed(1)
        .behavior(Boom)
        .behavior(Echo {
            period: Some(Duration::from_millis(500)),
        })
        .build()
        .unwrap();
    let c = net.handle_incoming(t(0), NodeId(2), None).unwrap();
    outputs(&mut net);
    let open = net.rpc::<Boom>(t(0), ()).unwrap();
    assert!(outputs(&mut net).is_empty(), "the RPC stays open");

    net.handle_frame(t(1), c, &frame(BOOM, RouteRule::Direct, NodeId(2), &9u8));
    let out = outputs(&mut net);
    // Nothing it queued before panicking (its event) applies; its open RPC
    // is answered with an error; the application is told.
    assert!(
        !out.iter().any(|o| matches!(o, Output::Event(_))),
        "{out:?}"
    );
    assert!(out.iter().any(|o| matches!(o, Output::RpcAnswer { id, result: Err(RpcError::BehaviorFailed(BOOM)) } if *id == open)), "{out:?}");
    let failure = out
        .iter()
        .find_map(|o| match o {
            Output::BehaviorFailed(f) => Some(f.clone()),
            _ => None,
        })
        .expect("a failure output");
    assert_eq!((failure.service, failure.callback), (BOOM, "on_message"));
    assert_eq!(failure.message, "boom on 9");
    assert!(failure.behavior.ends_with("Boom"));
    assert_eq!(net.failed_services(), vec![BOOM]);
    assert_eq!(net.stats().behavior_failures, 1);

    // Its messages are refused and counted; its RPCs answer with an error.
    net.handle_frame(t(2), c, &frame(BOOM, RouteRule::Direct, NodeId(2), &1u8));
    let out = outputs(&mut net);
    assert!(
        matches!(
            out.as_slice(),
            [
                Output::Dropped(DropReport {
                    reason: DropReason::BehaviorFailed,
                    ..
                }),
                Output::Send { .. }
            ]
        ),
        "{out:?}"
    );
    let id = net.rpc::<Boom>(t(2), ()).unwrap();
    let out = outputs(&mut net);
    assert!(
        matches!(out.as_slice(), [Output::RpcAnswer { id: i, result: Err(RpcError::BehaviorFailed(BOOM)) }] if *i == id),
        "{out:?}"
    );

    // The connection and the other behaviour go on; Boom's timer is gone.
    assert_eq!(net.connections().count(), 1);
    net.handle_frame(
        t(3),
        c,
        &frame(ECHO, RouteRule::Node(ME), NodeId(2), &EchoMsg::Ping(1)),
    );
    assert!(outputs(&mut net)
        .iter()
        .any(|o| matches!(o, Output::Send { .. })));
    net.handle_timeout(t(1000));
    let events = outputs(&mut net);
    assert_eq!(
        events.len(),
        1,
        "Echo's tick and nothing of Boom's: {events:?}"
    );
}

#[test]
fn nodes_built_without_a_seed_draw_different_numbers_and_a_seed_replays() {
    let draw = |seed: Option<u64>| {
        let b = Network::builder(ME, router(&[])).behavior(Echo::default());
        let mut net = match seed {
            Some(s) => b.seed(s),
            None => b,
        }
        .build()
        .unwrap();
        net.rpc::<Echo>(t(0), ()).unwrap();
        match net.poll_output() {
            Some(Output::RpcAnswer { result: Ok(n), .. }) => *n.downcast::<u64>().unwrap(),
            other => panic!("{other:?}"),
        }
    };
    assert_ne!(draw(None), draw(None), "OS-seeded nodes differ");
    assert_eq!(draw(Some(42)), draw(Some(42)), "a seed replays");
    assert_ne!(draw(Some(42)), draw(Some(43)));
}

#[test]
fn timers_move_cancel_and_leave_with_their_connection() {
    struct Timed;
    struct TimedHandler;
    impl ConnectionHandler for TimedHandler {
        type Msg = ();
        type FromBehavior = ();
        type ToBehavior = u64;
        fn on_opened(&mut self, agent: &mut ConnectionAgent<'_, Self>) {
            agent.schedule_after(Duration::from_millis(50), 1);
            agent.schedule_after(Duration::from_millis(10), 2);
            agent.schedule_after(Duration::from_millis(30), 2); // moved
            agent.schedule_after(Duration::from_millis(20), 3);
            agent.cancel_timer(3);
        }
        fn on_message(&mut self, _: &mut ConnectionAgent<'_, Self>, _: Incoming<()>) {}
        fn on_timer(&mut self, agent: &mut ConnectionAgent<'_, Self>, token: u64) {
            agent.emit_to_behavior(token);
        }
    }
    impl NetworkBehavior for Timed {
        type Msg = ();
        type Handler = TimedHandler;
        type Event = (Instant, u64);
        type Rpc = ();
        fn service_id(&self) -> ServiceId {
            ServiceId(20)
        }
        fn on_connected(
            &mut self,
            _: &mut BehaviorAgent<'_, Self>,
            _: ConnectionInfo,
        ) -> Option<TimedHandler> {
            Some(TimedHandler)
        }
        fn on_handler_event(
            &mut self,
            agent: &mut BehaviorAgent<'_, Self>,
            _: ConnectionInfo,
            token: u64,
        ) {
            let now = agent.now();
            agent.emit((now, token));
        }
    }
    let mut net = Network::builder(ME, router(&[]))
        .seed(1)
        .behavior(Timed)
        .build()
        .unwrap();
    assert_eq!(net.poll_timeout(), Some(t(0)), "a new node wants to start");
    net.handle_timeout(t(0));
    assert_eq!(net.poll_timeout(), None, "nothing pending: the node sleeps");
    let c = net.handle_incoming(t(0), NodeId(2), None).unwrap();
    assert_eq!(net.poll_timeout(), Some(t(30)));
    net.handle_timeout(t(30));
    let fired: Vec<(Instant, u64)> = outputs(&mut net)
        .into_iter()
        .filter_map(|o| match o {
            Output::Event(e) => e.downcast::<(Instant, u64)>().ok(),
            _ => None,
        })
        .collect();
    assert_eq!(fired, vec![(t(30), 2)]);
    assert_eq!(net.poll_timeout(), Some(t(50)));
    net.handle_disconnected(t(40), c);
    assert_eq!(net.poll_timeout(), None, "the handler's timer left with it");
}

#[test]
fn one_hop_messages_go_to_the_handler_and_routed_ones_to_the_behaviour() {
    struct Where;
    struct WhereHandler;
    impl ConnectionHandler for WhereHandler {
        type Msg = u8;
        type FromBehavior = ();
        type ToBehavior = &'static str;
        fn on_message(&mut self, agent: &mut ConnectionAgent<'_, Self>, _: Incoming<u8>) {
            agent.emit_to_behavior("handler");
        }
    }
    impl NetworkBehavior for Where {
        type Msg = u8;
        type Handler = WhereHandler;
        type Event = &'static str;
        type Rpc = ();
        fn service_id(&self) -> ServiceId {
            ServiceId(21)
        }
        fn on_connected(
            &mut self,
            _: &mut BehaviorAgent<'_, Self>,
            _: ConnectionInfo,
        ) -> Option<WhereHandler> {
            Some(WhereHandler)
        }
        fn on_handler_event(
            &mut self,
            agent: &mut BehaviorAgent<'_, Self>,
            _: ConnectionInfo,
            e: &'static str,
        ) {
            agent.emit(e);
        }
        fn on_message(&mut self, agent: &mut BehaviorAgent<'_, Self>, _: Incoming<u8>) {
            agent.emit("behaviour");
        }
    }
    let mut net = Network::builder(ME, router(&[]))
        .seed(1)
        .behavior(Where)
        .build()
        .unwrap();
    let c = net.handle_incoming(t(0), NodeId(2), None).unwrap();
    net.handle_frame(
        t(1),
        c,
        &frame(ServiceId(21), RouteRule::Direct, NodeId(2), &0u8),
    );
    net.handle_frame(
        t(1),
        c,
        &frame(ServiceId(21), RouteRule::Node(ME), NodeId(2), &0u8),
    );
    let seen: Vec<&str> = outputs(&mut net)
        .into_iter()
        .filter_map(|o| match o {
            Output::Event(e) => e.downcast::<&'static str>().ok(),
            _ => None,
        })
        .collect();
    assert_eq!(seen, vec!["handler", "behaviour"]);
}

#[test]
fn a_bootstrap_peer_is_retried_with_backoff_and_redialled_when_alone() {
    let peer = NodeId(2);
    let addr = Address::Memory(2);
    let mut net = Network::builder(ME, router(&[]))
        .seed(1)
        .behavior(Echo::default())
        .bootstrap(peer, addr)
        .build()
        .unwrap();
    let dial = |net: &mut Network, now: Instant| -> Option<ConnId> {
        net.handle_timeout(now);
        outputs(net).into_iter().find_map(|o| match o {
            Output::Connect { conn, node, .. } if node == peer => Some(conn),
            _ => None,
        })
    };
    let c = dial(&mut net, t(0)).expect("dialled at once");
    net.handle_outgoing_failed(t(10), c, OutgoingConnectionError::NetworkKey);
    let out = outputs(&mut net);
    assert!(
        out.iter().any(|o| matches!(
            o,
            Output::DialFailed(DialFailure {
                error: OutgoingConnectionError::NetworkKey,
                ..
            })
        )),
        "{out:?}"
    );
    let st = &net.bootstrap_peers()[0];
    assert_eq!(
        (st.connected, st.failures, st.last_error.clone()),
        (false, 1, Some(OutgoingConnectionError::NetworkKey))
    );
    // Retried after about a second (±20%), not before.
    let next = net.poll_timeout().expect("a retry is due");
    assert!(next >= t(10 + 800) && next <= t(10 + 1200), "{next}");
    let c = dial(&mut net, next).expect("retried");
    net.handle_outgoing_failed(next, c, OutgoingConnectionError::Unreachable);
    let again = net.poll_timeout().unwrap();
    assert!(
        again - next >= Duration::from_millis(1600),
        "backoff doubles: {:?}",
        again - next
    );
    let c = dial(&mut net, again).expect("retried again");
    net.handle_outgoing_connected(again, c, peer);
    let st = &net.bootstrap_peers()[0];
    assert_eq!(
        (st.connected, st.failures, st.last_error.clone()),
        (true, 0, None)
    );
    // Alone again after a short-lived connection: redialled after the
    // backoff, which kept growing (a peer that accepts and drops us is not
    // hammered): about 4 s.
    let down = again + Duration::from_secs(1);
    net.handle_disconnected(down, c);
    let redial = net.poll_timeout().expect("a redial is due");
    assert!(
        redial - down >= Duration::from_millis(3200)
            && redial - down <= Duration::from_millis(4800),
        "{:?}",
        redial - down
    );
    let c = dial(&mut net, redial).expect("redialled");
    // A connection that lasts resets the backoff: the next redial comes
    // about a second after it drops.
    net.handle_outgoing_connected(redial, c, peer);
    let down = redial + Duration::from_secs(60);
    net.handle_disconnected(down, c);
    let redial = net.poll_timeout().expect("a redial is due");
    assert!(
        redial - down <= Duration::from_millis(1200),
        "{:?}",
        redial - down
    );
}

#[test]
fn a_persistent_peer_is_redialled_while_other_links_are_up() {
    let (kept, other) = (NodeId(2), NodeId(3));
    let mut net = Network::builder(ME, router(&[]))
        .seed(1)
        .behavior(Echo::default())
        .persistent_peer(kept, Address::Memory(2))
        .bootstrap(other, Address::Memory(3))
        .build()
        .unwrap();
    let dials = |net: &mut Network, now: Instant| -> Vec<(ConnId, NodeId)> {
        net.handle_timeout(now);
        outputs(net)
            .into_iter()
            .filter_map(|o| match o {
                Output::Connect { conn, node, .. } => Some((conn, node)),
                _ => None,
            })
            .collect()
    };
    let first = dials(&mut net, t(0));
    assert_eq!(first.len(), 2, "both dialled at once: {first:?}");
    for (c, n) in first.iter().copied() {
        net.handle_outgoing_connected(t(5), c, n);
    }
    assert!(net.bootstrap_peers().iter().all(|b| b.connected));
    assert!(net.bootstrap_peers()[0].persistent && !net.bootstrap_peers()[1].persistent);
    // Both links drop, the node keeps none: only the persistent peer is
    // redialled while the other link is back up; the bootstrap peer is not.
    let (ck, co) = (first[0].0, first[1].0);
    net.handle_disconnected(t(10), ck);
    let down = t(10);
    let redial = net.poll_timeout().expect("the kept link is redialled");
    assert!(
        redial - down >= Duration::from_millis(800) && redial - down <= Duration::from_millis(1200),
        "{:?}",
        redial - down
    );
    let again = dials(&mut net, redial);
    assert_eq!(again.iter().map(|d| d.1).collect::<Vec<_>>(), vec![kept]);
    // Failures back off, but never past 2 s (±20%).
    let mut now = redial;
    let mut conn = again[0].0;
    for _ in 0..8 {
        net.handle_outgoing_failed(now, conn, OutgoingConnectionError::Unreachable);
        let next = net.poll_timeout().expect("retried");
        assert!(
            next - now <= Duration::from_millis(2400),
            "{:?}",
            next - now
        );
        now = next;
        let d = dials(&mut net, now);
        assert_eq!(d.iter().map(|d| d.1).collect::<Vec<_>>(), vec![kept]);
        conn = d[0].0;
    }
    net.handle_outgoing_connected(now, conn, kept);
    // The other link going down, with the kept one up, is not redialled.
    net.handle_disconnected(now, co);
    let later = now + Duration::from_secs(120);
    assert!(dials(&mut net, later).is_empty());
}

#[test]
fn on_start_runs_once_before_anything_else() {
    #[derive(Default)]
    struct Starts(Vec<&'static str>);
    impl NetworkBehavior for Starts {
        type Msg = ();
        type Handler = NoHandler<()>;
        type Event = ();
        type Rpc = ((), Vec<&'static str>);
        fn service_id(&self) -> ServiceId {
            ServiceId(22)
        }
        fn on_start(&mut self, _: &mut BehaviorAgent<'_, Self>) {
            self.0.push("start");
        }
        fn on_connected(
            &mut self,
            _: &mut BehaviorAgent<'_, Self>,
            _: ConnectionInfo,
        ) -> Option<NoHandler<()>> {
            self.0.push("connected");
            None
        }
        fn on_rpc(
            &mut self,
            agent: &mut BehaviorAgent<'_, Self>,
            _: (),
            a: Answer<Vec<&'static str>>,
        ) {
            agent.answer(a, self.0.clone());
        }
    }
    let mut net = Network::builder(ME, router(&[]))
        .seed(1)
        .behavior(Starts::default())
        .build()
        .unwrap();
    // The first input is a connection, not the start timer.
    net.handle_incoming(t(5), NodeId(2), None).unwrap();
    net.handle_timeout(t(6));
    assert_eq!(
        net.behavior::<Starts>().unwrap().0,
        vec!["start", "connected"]
    );
    assert_eq!(net.poll_timeout(), None);
}

#[test]
fn an_event_sent_to_the_new_handler_in_on_connected_reaches_it() {
    struct Greets;
    struct GreetsHandler;
    impl ConnectionHandler for GreetsHandler {
        type Msg = ();
        type FromBehavior = u8;
        type ToBehavior = u8;
        fn on_message(&mut self, _: &mut ConnectionAgent<'_, Self>, _: Incoming<()>) {}
        fn on_behavior_event(&mut self, agent: &mut ConnectionAgent<'_, Self>, n: u8) {
            agent.emit_to_behavior(n);
        }
    }
    impl NetworkBehavior for Greets {
        type Msg = ();
        type Handler = GreetsHandler;
        type Event = u8;
        type Rpc = ();
        fn service_id(&self) -> ServiceId {
            ServiceId(23)
        }
        fn on_connected(
            &mut self,
            agent: &mut BehaviorAgent<'_, Self>,
            c: ConnectionInfo,
        ) -> Option<GreetsHandler> {
            agent.send_to_handler(c.conn, 7);
            Some(GreetsHandler)
        }
        fn on_handler_event(
            &mut self,
            agent: &mut BehaviorAgent<'_, Self>,
            _: ConnectionInfo,
            n: u8,
        ) {
            agent.emit(n);
        }
    }
    let mut net = Network::builder(ME, router(&[]))
        .seed(1)
        .behavior(Greets)
        .build()
        .unwrap();
    net.handle_incoming(t(0), NodeId(2), None).unwrap();
    let got: Vec<u8> = outputs(&mut net)
        .into_iter()
        .filter_map(|o| match o {
            Output::Event(e) => e.downcast::<u8>().ok(),
            _ => None,
        })
        .collect();
    assert_eq!(got, vec![7]);
}

#[test]
fn a_connection_says_which_behaviour_dialled_it() {
    /// Dials node 3 when it starts; records who dialled each connection.
    #[derive(Default)]
    struct Dialler(Vec<(NodeId, Option<ServiceId>)>);
    impl NetworkBehavior for Dialler {
        type Msg = ();
        type Handler = NoHandler<()>;
        type Event = ();
        type Rpc = ();
        fn service_id(&self) -> ServiceId {
            ServiceId(23)
        }
        fn on_start(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
            agent.connect(NodeId(3), Address::Memory(3));
            agent.connect(NodeId(4), Address::Memory(4));
        }
        fn on_connected(
            &mut self,
            _: &mut BehaviorAgent<'_, Self>,
            info: ConnectionInfo,
        ) -> Option<NoHandler<()>> {
            self.0.push((info.node, info.dialled_by));
            None
        }
    }
    let mut net = Network::builder(ME, router(&[]))
        .seed(1)
        .behavior(Dialler::default())
        .build()
        .unwrap();
    net.handle_timeout(t(0));
    let dials: BTreeMap<NodeId, ConnId> = outputs(&mut net)
        .into_iter()
        .filter_map(|o| match o {
            Output::Connect { conn, node, .. } => Some((node, conn)),
            _ => None,
        })
        .collect();
    assert_eq!(dials.len(), 2, "the behaviour's two dials");
    // The application asks for node 4 while the behaviour's dial is in
    // flight: that connection becomes the application's.
    assert!(matches!(
        net.connect(t(1), NodeId(4), Address::Memory(4)),
        Err(ConnectError::AlreadyConnected { .. })
    ));
    // And dials node 5 itself; node 2 dials in.
    let own = net.connect(t(1), NodeId(5), Address::Memory(5)).unwrap();
    net.handle_outgoing_connected(t(2), dials[&NodeId(3)], NodeId(3));
    net.handle_outgoing_connected(t(2), dials[&NodeId(4)], NodeId(4));
    net.handle_outgoing_connected(t(2), own, NodeId(5));
    net.handle_incoming(t(2), NodeId(2), None).unwrap();
    let seen: BTreeMap<NodeId, Option<ServiceId>> = net
        .behavior::<Dialler>()
        .unwrap()
        .0
        .iter()
        .copied()
        .collect();
    assert_eq!(seen[&NodeId(3)], Some(ServiceId(23)));
    assert_eq!(seen[&NodeId(4)], None);
    assert_eq!(seen[&NodeId(5)], None);
    assert_eq!(seen[&NodeId(2)], None);
}

#[test]
fn a_reliable_message_dropped_in_transit_is_reported_to_its_source() {
    // The relay: 2's message for 9, which it has no route to.
    let mut relay = Network::builder(ME, router(&[(2, 2)]))
        .seed(1)
        .behavior(Echo::default())
        .build()
        .unwrap();
    let c2 = relay.handle_incoming(t(0), NodeId(2), None).unwrap();
    outputs(&mut relay);
    let lost = frame(
        ECHO,
        RouteRule::Node(NodeId(9)),
        NodeId(2),
        &EchoMsg::Ping(7),
    );
    relay.handle_frame(t(1), c2, &lost);
    let out = outputs(&mut relay);
    let notice = out
        .iter()
        .find_map(|o| match o {
            Output::Send { conn, frame, .. } if *conn == c2 => Some(frame.clone()),
            _ => None,
        })
        .expect("a notice goes back to 2");
    let f = Frame::decode(&notice, 1 << 20).unwrap();
    assert_eq!(f.header.service, crate::DROP_NOTICE);
    assert_eq!(f.header.rule, RouteRule::Node(NodeId(2)));
    assert_eq!(f.header.source, ME);
    assert_eq!(f.payload[0], 2, "the code for no route");
    let (about, _) = Header::decode(&f.payload[1..], usize::MAX).unwrap();
    assert_eq!(about.rule, RouteRule::Node(NodeId(9)));
    assert_eq!(about.source, NodeId(2));
    assert_eq!(relay.stats().drop_notices_sent, 1);

    // Unreliable messages and notices themselves get none.
    let mut quiet = frame(
        ECHO,
        RouteRule::Node(NodeId(9)),
        NodeId(2),
        &EchoMsg::Ping(8),
    );
    quiet[1] |= 1;
    relay.handle_frame(t(2), c2, &quiet);
    let mut about_notice = notice.clone();
    about_notice[5..13].copy_from_slice(&9u64.to_be_bytes());
    relay.handle_frame(t(2), c2, &about_notice);
    assert_eq!(relay.stats().drop_notices_sent, 1);
    assert_eq!(relay.stats().dropped, 3);

    for i in 0..150 {
        relay.handle_frame(
            t(1000),
            c2,
            &frame(
                ECHO,
                RouteRule::Node(NodeId(9)),
                NodeId(2),
                &EchoMsg::Ping(i),
            ),
        );
    }
    // Rate-limited: 100 a second; the other 50 (the same header) wait as
    // one notice with their count for the next second.
    assert_eq!(relay.stats().drop_notices_sent, 101);
    outputs(&mut relay);
    assert_eq!(relay.poll_timeout(), Some(t(2000)));
    relay.handle_timeout(t(2000));
    let late: Vec<Vec<u8>> = outputs(&mut relay)
        .into_iter()
        .filter_map(|o| match o {
            Output::Send { frame, .. } => Some(frame),
            _ => None,
        })
        .collect();
    assert_eq!(late.len(), 1);
    let f = Frame::decode(&late[0], 1 << 20).unwrap();
    assert_eq!(&f.payload[1 + HEADER_LEN..], &50u32.to_be_bytes());
    assert_eq!(relay.stats().drop_notices_sent, 102);
    assert_eq!(relay.stats().drop_notices_suppressed, 0);

    // The source: its own message to 9 went out through 2 and died there.
    let mut src = Network::builder(ME, router(&[(9, 2), (2, 2)]))
        .seed(2)
        .behavior(Echo::default())
        .build()
        .unwrap();
    let to2 = src.handle_incoming(t(0), NodeId(2), None).unwrap();
    outputs(&mut src);
    let payload = postcard::to_allocvec(&EchoMsg::Ping(1)).unwrap();
    let mut buf = vec![0u8; HEADER_LEN];
    buf.extend_from_slice(&payload);
    src.send_frame(
        t(1),
        ECHO,
        RouteRule::Node(NodeId(9)),
        buf,
        SendOptions::default(),
    )
    .unwrap();
    let sent = outputs(&mut src)
        .into_iter()
        .find_map(|o| match o {
            Output::Send { frame, .. } => Some(frame),
            _ => None,
        })
        .unwrap();
    let notice_header = Header {
        service: crate::DROP_NOTICE,
        rule: RouteRule::Node(ME),
        ttl: 8,
        source: NodeId(2),
        unreliable: false,
    };
    let mut notice = notice_header.to_bytes(1 + HEADER_LEN as u32).to_vec();
    notice.push(2);
    notice.extend_from_slice(&sent[..HEADER_LEN]);
    src.handle_frame(t(2), to2, &notice);
    let out = outputs(&mut src);
    assert!(
        out.iter().any(|o| matches!(
            o,
            Output::Dropped(DropReport {
                source: ME,
                service: ECHO,
                rule: RouteRule::Node(NodeId(9)),
                reason: DropReason::Remote {
                    at: NodeId(2),
                    why: crate::RemoteDrop::NoRoute
                },
                count: 1,
            })
        )),
        "{out:?}"
    );
    assert_eq!(src.stats().drop_notices_received, 1);
    assert_eq!(src.stats().dropped, 0, "not a local drop");

    // A notice about someone else's message, or malformed, is ignored.
    notice[HEADER_LEN + 1 + 13..HEADER_LEN + 1 + 21].copy_from_slice(&5u64.to_be_bytes());
    src.handle_frame(t(3), to2, &notice);
    let short = &notice[..notice.len() - 1];
    let mut short = short.to_vec();
    short[21..25].copy_from_slice(&(HEADER_LEN as u32).to_be_bytes());
    src.handle_frame(t(3), to2, &short);
    assert_eq!(src.stats().drop_notices_received, 1);
    assert!(!outputs(&mut src)
        .iter()
        .any(|o| matches!(o, Output::Dropped(_))));
}

#[test]
fn messages_that_die_together_make_one_notice_with_their_count() {
    // The relay held three of 2's messages for 9 and one for 8 on a
    // connection to 3 that closed before 3 confirmed them.
    let mut relay = Network::builder(ME, router(&[(2, 2), (9, 3), (8, 3)]))
        .seed(1)
        .behavior(Echo::default())
        .build()
        .unwrap();
    let c2 = relay.handle_incoming(t(0), NodeId(2), None).unwrap();
    let c3 = relay.handle_incoming(t(0), NodeId(3), None).unwrap();
    outputs(&mut relay);
    let to = |dest: u64, i: u32| {
        frame(
            ECHO,
            RouteRule::Node(NodeId(dest)),
            NodeId(2),
            &EchoMsg::Ping(i),
        )
    };
    let held = [to(9, 1), to(9, 2), to(8, 3), to(9, 4)];
    relay.handle_sends_aborted(t(1), c3, held.iter().map(|f| &f[..]));
    let notices: Vec<Vec<u8>> = outputs(&mut relay)
        .into_iter()
        .filter_map(|o| match o {
            Output::Send { conn, frame, .. } if conn == c2 => Some(frame),
            _ => None,
        })
        .collect();
    assert_eq!(notices.len(), 2, "one notice per rule");
    let about = |n: &[u8]| {
        let f = Frame::decode(n, 1 << 20).unwrap();
        let (h, _) = Header::decode(&f.payload[1..], usize::MAX).unwrap();
        let count = match f.payload.len() - 1 - HEADER_LEN {
            0 => 1,
            4 => u32::from_be_bytes(f.payload[1 + HEADER_LEN..].try_into().unwrap()),
            other => panic!("{other} trailing bytes"),
        };
        (f.payload[0], h.rule, count)
    };
    assert_eq!(about(&notices[0]), (3, RouteRule::Node(NodeId(9)), 3));
    assert_eq!(about(&notices[1]), (3, RouteRule::Node(NodeId(8)), 1));
    assert_eq!(relay.stats().dropped, 4);
    assert_eq!(relay.stats().drop_notices_sent, 2);

    // The source hears one report standing for the three.
    let mut src = Network::builder(NodeId(2), router_of(NodeId(2), &[(1, 1)]))
        .seed(2)
        .behavior(Echo::default())
        .build()
        .unwrap();
    let to_relay = src.handle_incoming(t(0), ME, None).unwrap();
    outputs(&mut src);
    src.handle_frame(t(2), to_relay, &notices[0]);
    let reports: Vec<DropReport> = outputs(&mut src)
        .into_iter()
        .filter_map(|o| match o {
            Output::Dropped(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].count, 3, "{reports:?}");
    assert_eq!(reports[0].rule, RouteRule::Node(NodeId(9)));
    assert!(matches!(
        reports[0].reason,
        DropReason::Remote {
            at: ME,
            why: crate::RemoteDrop::ConnectionClosed
        }
    ));
}

#[test]
fn no_behaviour_may_claim_the_drop_notice_service() {
    struct Squatter;
    impl NetworkBehavior for Squatter {
        type Msg = ();
        type Handler = NoHandler<()>;
        type Event = ();
        type Rpc = ();
        fn service_id(&self) -> ServiceId {
            crate::DROP_NOTICE
        }
    }
    let err = Network::builder(ME, router(&[]))
        .seed(1)
        .behavior(Squatter)
        .build()
        .unwrap_err();
    assert!(
        matches!(err, crate::BuildError::ReservedService(_)),
        "{err:?}"
    );
}
