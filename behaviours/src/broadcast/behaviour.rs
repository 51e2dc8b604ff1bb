//! One Plumtree over the node's overlay neighbours.

use super::plumtree::{Action, MsgId, Plumtree};
use super::{Config, Event, Message, Request, Response};
use crate::neighbourhood::{Change, Neighbourhood};
use bytes::Bytes;
use plexus_network::{
    Answer, BehaviorAgent, ConnectionInfo, DropReason, DropReport, Incoming, Instant,
    NetworkBehavior, NoHandler, NodeId, RouteRule, ServiceId,
};
use std::any::Any;

/// The tree's timer.
const TREE: u64 = 0;

/// The broadcast behaviour. See the [module docs](super).
#[derive(Debug)]
pub struct Behaviour {
    config: Config,
    tree: Option<Plumtree<Bytes>>,
    /// Neighbours and the connection each is reached on.
    hood: Neighbourhood,
    next_seq: u64,
    armed: Option<Instant>,
}

impl Behaviour {
    /// A broadcast behaviour with these settings.
    pub fn new(config: Config) -> Self {
        Behaviour {
            hood: Neighbourhood::new(config.neighbours),
            config,
            tree: None,
            next_seq: 0,
            armed: None,
        }
    }

    /// The tree (`None` before the node started).
    pub fn tree(&self) -> Option<&Plumtree<Bytes>> {
        self.tree.as_ref()
    }

    fn tree_mut(&mut self, local: NodeId) -> &mut Plumtree<Bytes> {
        let cfg = &self.config.tree;
        self.tree
            .get_or_insert_with(|| Plumtree::new(local, cfg.clone()))
    }

    /// Follows a change of the neighbours: a peer on a new connection may
    /// have restarted, so the tree starts over with it (it gets the recent
    /// ids again, to graft what it lacks).
    fn on_change(&mut self, agent: &mut BehaviorAgent<'_, Self>, change: Change) {
        let now = agent.now();
        let tree = self.tree_mut(agent.local_node());
        match change {
            Change::None | Change::Moved(..) => return,
            Change::Up(node, _) => tree.neighbor_up(now, node),
            Change::Replaced(node, _) => {
                tree.neighbor_down(node);
                tree.neighbor_up(now, node);
            }
            Change::Down(node) => tree.neighbor_down(node),
        }
        self.run(agent);
    }

    /// Carries out what the tree asked, and keeps its timer armed.
    fn run(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        let Some(tree) = self.tree.as_mut() else {
            return;
        };
        for action in tree.take_actions() {
            match action {
                Action::Send { to, msg } => match self.hood.conn(&to) {
                    Some(conn) => agent.send_to_conn(conn, msg),
                    None => log::trace!("broadcast: {to} is no neighbour any more"),
                },
                Action::Deliver {
                    id,
                    round,
                    from,
                    payload,
                } => agent.emit(Event {
                    id,
                    hops: round,
                    from,
                    payload,
                }),
            }
        }
        let next = tree.next_deadline();
        if next != self.armed {
            self.armed = next;
            match next {
                Some(at) => agent.schedule_at(at, TREE),
                None => agent.cancel_timer(TREE),
            }
        }
    }
}

impl NetworkBehavior for Behaviour {
    type Msg = Message;
    type Handler = NoHandler<Message>;
    type Event = Event;
    type Rpc = (Request, Response);

    fn service_id(&self) -> ServiceId {
        self.config.service
    }

    fn on_start(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        // A random start: a restarted author never reuses its old ids.
        self.next_seq = agent.rng().next_u64() >> 1;
        self.tree_mut(agent.local_node());
    }

    fn on_connected(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        info: ConnectionInfo,
    ) -> Option<NoHandler<Message>> {
        let change = self.hood.on_connected(&info);
        self.on_change(agent, change);
        None
    }

    fn on_disconnected(&mut self, agent: &mut BehaviorAgent<'_, Self>, info: ConnectionInfo) {
        let change = self.hood.on_disconnected(&info, agent.connections());
        self.on_change(agent, change);
    }

    fn on_local_event(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        _from: ServiceId,
        event: &(dyn Any + Send + Sync),
    ) {
        let change = self.hood.on_local_event(event);
        self.on_change(agent, change);
    }

    fn on_message(&mut self, agent: &mut BehaviorAgent<'_, Self>, msg: Incoming<Message>) {
        let (Some(_), RouteRule::Direct) = (msg.conn, msg.rule) else {
            return; // tree messages travel one hop
        };
        let now = agent.now();
        self.tree_mut(agent.local_node())
            .on_message(now, msg.source, msg.msg);
        self.run(agent);
    }

    fn on_timer(&mut self, agent: &mut BehaviorAgent<'_, Self>, token: u64) {
        if token == TREE {
            self.armed = None;
            let now = agent.now();
            self.tree_mut(agent.local_node()).on_timeout(now);
            self.run(agent);
        }
    }

    fn on_dropped(&mut self, agent: &mut BehaviorAgent<'_, Self>, report: &DropReport) {
        // A neighbour whose send queue overflowed: ids only, from now on.
        if let DropReason::QueueFull(conn) = report.reason {
            if let Some(n) = self.hood.node_of(conn) {
                self.tree_mut(agent.local_node()).peer_slow(n);
            }
        }
    }

    fn on_rpc(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        req: Request,
        answer: Answer<Response>,
    ) {
        match req {
            Request::Broadcast(payload) => {
                if payload.len() > self.config.max_payload {
                    agent.refuse(
                        answer,
                        format!(
                            "payload of {} bytes over the {}-byte maximum",
                            payload.len(),
                            self.config.max_payload
                        ),
                    );
                    return;
                }
                let id = MsgId {
                    author: agent.local_node(),
                    seq: self.next_seq,
                };
                self.next_seq = self.next_seq.wrapping_add(1);
                let now = agent.now();
                self.tree_mut(agent.local_node())
                    .broadcast(now, id, payload);
                self.run(agent);
                agent.answer(answer, Response::Sent(id));
            }
            Request::Stats => {
                let stats = self.tree_mut(agent.local_node()).stats();
                agent.answer(answer, Response::Stats(stats));
            }
            Request::Tree => {
                let tree = self.tree_mut(agent.local_node());
                let eager = tree.eager().collect();
                let lazy = tree.lazy().collect();
                agent.answer(answer, Response::Tree { eager, lazy });
            }
        }
    }
}
