//! Shared pieces: a probe behaviour that reports what reaches it, and
//! builders for simulated nodes.

use plexus::router::StaticRouter;
use plexus::sim::Sim;
use plexus::{
    BehaviorAgent, Incoming, Network, NetworkBehavior, NoHandler, NodeId, RouteRule, ServiceId,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The probe's service.
pub(crate) const PROBE: ServiceId = ServiceId(200);

/// A test message: a tag to recognise it by.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tagged(pub(crate) u64);

/// What the probe emits when a message reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Received {
    pub(crate) source: NodeId,
    pub(crate) rule: RouteRule,
    pub(crate) tag: u64,
}

/// Emits every message that reaches it.
pub(crate) struct Probe;

impl NetworkBehavior for Probe {
    type Msg = Tagged;
    type Handler = NoHandler<Tagged>;
    type Event = Received;
    type Rpc = ();

    fn service_id(&self) -> ServiceId {
        PROBE
    }

    fn on_message(&mut self, agent: &mut BehaviorAgent<'_, Self>, msg: Incoming<Tagged>) {
        agent.emit(Received {
            source: msg.source,
            rule: msg.rule,
            tag: msg.msg.0,
        });
    }
}

/// Adds one node per router, each running the probe when `probe(i)` says so.
pub(crate) fn add_nodes(
    sim: &mut Sim,
    routers: &[Arc<StaticRouter>],
    probe: impl Fn(usize) -> bool,
) {
    for (i, r) in routers.iter().enumerate() {
        let r = r.clone();
        let with_probe = probe(i);
        sim.add_node(r.local(), move |id, seed| {
            let b = Network::builder(id, r.clone()).seed(seed);
            let b = if with_probe { b.behavior(Probe) } else { b };
            b.build().expect("no duplicate services")
        });
    }
}

/// Dials every edge (lower index dials higher) and runs until all are up.
pub(crate) fn connect_edges(sim: &mut Sim, ids: &[NodeId], edges: &[(usize, usize)]) {
    for &(a, b) in edges {
        sim.connect(ids[a], ids[b]);
    }
    sim.run_for(std::time::Duration::from_secs(1)).unwrap();
    let up: usize = ids
        .iter()
        .map(|id| sim.node(*id).unwrap().connections().count())
        .sum();
    assert_eq!(up, edges.len() * 2, "every edge is up at both ends");
}

/// The probe events gathered so far, as (node, event).
pub(crate) fn received(sim: &mut Sim) -> Vec<(NodeId, Received)> {
    sim.take_events()
        .into_iter()
        .filter_map(|e| {
            let node = e.node;
            e.event.downcast::<Received>().ok().map(|r| (node, r))
        })
        .collect()
}
