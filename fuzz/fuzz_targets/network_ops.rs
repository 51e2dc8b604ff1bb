//! Applies an arbitrary sequence of driver inputs to one core — incoming
//! and outgoing connections, arbitrary frames on them, disconnections,
//! timers, application sends and RPCs — and drains its outputs. Nothing
//! from the network may panic it.
//!
//! `cargo +nightly fuzz run network_ops`
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_network::wire::{Frame, Header};
use plexus_network::{
    Address, BehaviorAgent, ConnId, Incoming, Instant, Network, NetworkBehavior, NoHandler, NodeId,
    OutgoingConnectionError, RouteRule, ServiceId,
};
use plexus_router::StaticRouter;
use std::sync::Arc;
use std::time::Duration;

/// Echoes what it receives back to its source by node rule.
struct Echo;

impl NetworkBehavior for Echo {
    type Msg = (u8, Vec<u8>);
    type Handler = NoHandler<(u8, Vec<u8>)>;
    type Event = ();
    type Rpc = (u8, u8);
    fn service_id(&self) -> ServiceId {
        ServiceId(7)
    }
    fn on_message(&mut self, agent: &mut BehaviorAgent<'_, Self>, m: Incoming<Self::Msg>) {
        if m.msg.0 % 2 == 0 {
            agent.send(RouteRule::Node(m.source), (m.msg.0 + 1, m.msg.1));
        }
    }
    fn on_rpc(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        req: u8,
        answer: plexus_network::Answer<u8>,
    ) {
        agent.answer(answer, req);
    }
}

fuzz_target!(|data: &[u8]| {
    let router = Arc::new(StaticRouter::new(NodeId(1)));
    router.set_route(NodeId(2), NodeId(2), 1);
    router.set_route(NodeId(3), NodeId(2), 2);
    let mut net = Network::builder(NodeId(1), router)
        .behavior(Echo)
        .build()
        .unwrap();
    let mut now = Instant::ZERO;
    let mut conns: Vec<ConnId> = Vec::new();
    let mut it = data.iter().copied();
    while let Some(op) = it.next() {
        let arg = it.next().unwrap_or(0);
        now += Duration::from_millis(u64::from(arg));
        let pick = |conns: &[ConnId]| conns.get(arg as usize % conns.len().max(1)).copied();
        match op % 9 {
            0 => {
                if let Ok(c) = net.handle_incoming(now, NodeId(u64::from(arg % 4)), None) {
                    conns.push(c);
                }
            }
            1 => {
                // An arbitrary frame: the next `arg` bytes.
                let len = arg as usize;
                let bytes: Vec<u8> = it.by_ref().take(len).collect();
                if let Some(c) = pick(&conns) {
                    net.handle_frame(now, c, &bytes);
                }
            }
            2 => {
                // A well-formed header around arbitrary payload bytes.
                let len = arg as usize;
                let payload: Vec<u8> = it.by_ref().take(len).collect();
                let Some(c) = pick(&conns) else {
                    continue;
                };
                let rule = match arg % 4 {
                    0 => RouteRule::Direct,
                    1 => RouteRule::Node(NodeId(u64::from(arg % 4))),
                    2 => RouteRule::Closest(NodeId(u64::from(arg))),
                    _ => RouteRule::Service,
                };
                // A one-hop message names its sender (the core closes a
                // connection whose direct messages name another node).
                let peer = net.connections().find(|i| i.conn == c).map(|i| i.node);
                let source = match (rule, peer) {
                    (RouteRule::Direct, Some(p)) => p,
                    _ => NodeId(u64::from(arg % 5)),
                };
                let h = Header {
                    service: ServiceId(if arg % 3 == 0 { 9 } else { 7 }),
                    rule,
                    ttl: arg % 4,
                    source,
                    unreliable: arg % 2 == 0,
                };
                if let Ok(f) = Frame::encode(&h, &payload) {
                    net.handle_frame(now, c, &f);
                }
            }
            3 => {
                if let Some(c) = pick(&conns) {
                    net.handle_disconnected(now, c);
                }
            }
            4 => net.handle_timeout(now),
            5 => {
                let _ = net.send(
                    now,
                    ServiceId(7),
                    RouteRule::Node(NodeId(u64::from(arg % 4))),
                    &(arg, vec![arg; 3]),
                );
            }
            6 => {
                if let Ok(c) = net.connect(
                    now,
                    NodeId(u64::from(arg % 5) + 2),
                    Address::Memory(u64::from(arg)),
                ) {
                    conns.push(c);
                }
            }
            7 => {
                if let Some(c) = pick(&conns) {
                    if arg % 2 == 0 {
                        net.handle_outgoing_connected(now, c, NodeId(u64::from(arg % 5)));
                    } else {
                        net.handle_outgoing_failed(now, c, OutgoingConnectionError::Timeout);
                    }
                }
            }
            _ => {
                let _ = net.rpc::<Echo>(now, arg);
            }
        }
        while net.poll_output().is_some() {}
    }
});
