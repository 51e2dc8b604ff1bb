//! Agents: behaviour → every handler, handler → another connection's handler.

use plexus::router::StaticRouter;
use plexus::sim::Sim;
use plexus::{
    Answer, BehaviorAgent, ConnId, ConnectionAgent, ConnectionHandler, ConnectionInfo, Incoming,
    Network, NetworkBehavior, NodeId, ServiceId,
};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug)]
enum ToHandler {
    /// From the behaviour to every handler.
    Hello(u32),
    /// Ask a handler to pass `n` to the handler of `to`.
    PassTo { to: ConnId, n: u32 },
    /// From one handler to another.
    Passed(u32),
}

#[derive(Debug, PartialEq, Eq)]
enum Seen {
    BehaviorEvent {
        conn: ConnId,
        n: u32,
    },
    OtherHandler {
        conn: ConnId,
        from_conn: ConnId,
        from_node: NodeId,
        n: u32,
    },
}

enum Req {
    Broadcast(u32),
    Pass { from: ConnId, to: ConnId, n: u32 },
}

struct Relay;
struct RelayHandler;

impl NetworkBehavior for Relay {
    type Msg = ();
    type Handler = RelayHandler;
    type Event = Seen;
    type Rpc = (Req, ());

    fn service_id(&self) -> ServiceId {
        ServiceId(42)
    }
    fn on_connected(
        &mut self,
        _: &mut BehaviorAgent<'_, Self>,
        _: ConnectionInfo,
    ) -> Option<RelayHandler> {
        Some(RelayHandler)
    }
    fn on_handler_event(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        _: ConnectionInfo,
        seen: Seen,
    ) {
        agent.emit(seen);
    }
    fn on_rpc(&mut self, agent: &mut BehaviorAgent<'_, Self>, req: Req, answer: Answer<()>) {
        match req {
            Req::Broadcast(n) => agent.send_to_handlers(ToHandler::Hello(n)),
            Req::Pass { from, to, n } => agent.send_to_handler(from, ToHandler::PassTo { to, n }),
        }
        agent.answer(answer, ());
    }
}

impl ConnectionHandler for RelayHandler {
    type Msg = ();
    type FromBehavior = ToHandler;
    type ToBehavior = Seen;

    fn on_message(&mut self, _: &mut ConnectionAgent<'_, Self>, _: Incoming<()>) {}
    fn on_behavior_event(&mut self, agent: &mut ConnectionAgent<'_, Self>, event: ToHandler) {
        match event {
            ToHandler::Hello(n) => {
                let conn = agent.conn();
                agent.emit_to_behavior(Seen::BehaviorEvent { conn, n });
            }
            ToHandler::PassTo { to, n } => agent.send_to_handler(to, ToHandler::Passed(n)),
            ToHandler::Passed(_) => {}
        }
    }
    fn on_other_handler_event(
        &mut self,
        agent: &mut ConnectionAgent<'_, Self>,
        from: ConnectionInfo,
        event: ToHandler,
    ) {
        if let ToHandler::Passed(n) = event {
            let conn = agent.conn();
            agent.emit_to_behavior(Seen::OtherHandler {
                conn,
                from_conn: from.conn,
                from_node: from.node,
                n,
            });
        }
    }
}

fn take_seen(sim: &mut Sim) -> Vec<Seen> {
    sim.take_events()
        .into_iter()
        .filter_map(|e| e.event.downcast::<Seen>().ok())
        .collect()
}

#[test]
fn behaviour_reaches_each_handler_and_handlers_reach_each_other() {
    let mut sim = Sim::new(4);
    let (a, b, c) = (NodeId(1), NodeId(2), NodeId(3));
    for id in [a, b, c] {
        sim.add_node(id, |id, seed| {
            Network::builder(id, Arc::new(StaticRouter::new(id)))
                .seed(seed)
                .behavior(Relay)
                .build()
                .unwrap()
        });
    }
    sim.connect(a, b);
    sim.connect(a, c);
    sim.run_for(Duration::from_secs(1)).unwrap();
    let conns: Vec<ConnectionInfo> = sim.node(a).unwrap().connections().copied().collect();
    assert_eq!(conns.len(), 2);
    take_seen(&mut sim);

    sim.rpc::<Relay>(a, Req::Broadcast(5))
        .unwrap()
        .expect("answered");
    let mut seen = take_seen(&mut sim);
    seen.sort_by_key(|s| format!("{s:?}"));
    assert_eq!(
        seen,
        vec![
            Seen::BehaviorEvent {
                conn: conns[0].conn,
                n: 5
            },
            Seen::BehaviorEvent {
                conn: conns[1].conn,
                n: 5
            },
        ]
    );

    let (from, to) = (conns[0], conns[1]);
    sim.rpc::<Relay>(
        a,
        Req::Pass {
            from: from.conn,
            to: to.conn,
            n: 9,
        },
    )
    .unwrap()
    .expect("answered");
    assert_eq!(
        take_seen(&mut sim),
        vec![Seen::OtherHandler {
            conn: to.conn,
            from_conn: from.conn,
            from_node: from.node,
            n: 9
        }]
    );
}
