//! Pieces shared by the plexus benchmarks: a sink behaviour and a core set
//! up with one neighbour, so the benches measure the core and nothing else.

pub mod flood;
pub mod soak;

use plexus::router::StaticRouter;
use plexus::wire::{Frame, Header};
use plexus::{
    BehaviorAgent, ConnId, Incoming, Network, NetworkBehavior, NoHandler, NodeId, RouteRule,
    ServiceId,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The sink's service.
pub const SINK: ServiceId = ServiceId(9);

/// A 40-byte message: a sequence number and 32 bytes of body.
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
pub struct Payload {
    /// Sequence number.
    pub seq: u64,
    /// Body.
    pub body: [u8; 32],
}

/// Counts what it receives; emits nothing, so a bench measures dispatch.
#[derive(Default, Debug)]
pub struct Sink {
    /// Messages received.
    pub received: u64,
    /// Sum of their sequence numbers (so the work cannot be optimised away).
    pub checksum: u64,
}

impl NetworkBehavior for Sink {
    type Msg = Payload;
    type Handler = NoHandler<Payload>;
    type Event = ();
    type Rpc = ();

    fn service_id(&self) -> ServiceId {
        SINK
    }

    fn on_message(&mut self, _agent: &mut BehaviorAgent<'_, Self>, msg: Incoming<Payload>) {
        self.received += 1;
        self.checksum = self.checksum.wrapping_add(msg.msg.seq);
    }
}

/// Node 1 with a sink, connected to node 2 (incoming) and node 3
/// (incoming); node 4 is routed through node 3.
pub fn core_with_neighbours() -> (Network, ConnId) {
    let router = StaticRouter::new(NodeId(1));
    router.set_route(NodeId(2), NodeId(2), 1);
    router.set_route(NodeId(3), NodeId(3), 1);
    router.set_route(NodeId(4), NodeId(3), 2);
    let mut net = Network::builder(NodeId(1), Arc::new(router))
        .behavior(Sink::default())
        .build()
        .expect("one behaviour");
    let now = plexus::Instant::ZERO;
    let conn = net.handle_incoming(now, NodeId(2), None).expect("accepted");
    net.handle_incoming(now, NodeId(3), None).expect("accepted");
    (net, conn)
}

/// A frame from node 2 for `dest`, routed by node rule.
pub fn frame_to(dest: NodeId, seq: u64) -> Vec<u8> {
    let header = Header {
        service: SINK,
        rule: RouteRule::Node(dest),
        ttl: 16,
        source: NodeId(2),
        unreliable: false,
    };
    let payload = postcard::to_allocvec(&Payload { seq, body: [7; 32] }).expect("serialisable");
    Frame::encode(&header, &payload).expect("small")
}
