//! Node-wide ping state: RTT statistics per connection.

use super::handler::{Handler, HandlerEvent};
use super::{Config, ConnStats, Event, Message, Request, Response, RttStats};
use plexus_network::{Answer, BehaviorAgent, ConnId, ConnectionInfo, NetworkBehavior, ServiceId};
use std::collections::BTreeMap;

/// The ping behaviour. See the [module docs](super).
#[derive(Debug)]
pub struct Behaviour {
    config: Config,
    conns: BTreeMap<ConnId, ConnStats>,
}

impl Behaviour {
    /// A ping behaviour with these settings.
    pub fn new(config: Config) -> Self {
        Behaviour {
            config,
            conns: BTreeMap::new(),
        }
    }

    /// Statistics of every open connection, in `ConnId` order.
    pub fn stats(&self) -> impl Iterator<Item = &ConnStats> + '_ {
        self.conns.values()
    }

    /// Statistics of one connection.
    pub fn conn_stats(&self, conn: ConnId) -> Option<&ConnStats> {
        self.conns.get(&conn)
    }
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour::new(Config::default())
    }
}

impl NetworkBehavior for Behaviour {
    type Msg = Message;
    type Handler = Handler;
    type Event = Event;
    type Rpc = (Request, Response);

    fn service_id(&self) -> ServiceId {
        self.config.service
    }

    fn on_connected(
        &mut self,
        _agent: &mut BehaviorAgent<'_, Self>,
        conn: ConnectionInfo,
    ) -> Option<Handler> {
        self.conns.insert(
            conn.conn,
            ConnStats {
                peer: conn.node,
                conn: conn.conn,
                rtt: None,
            },
        );
        Some(Handler::new(&self.config))
    }

    fn on_disconnected(&mut self, _agent: &mut BehaviorAgent<'_, Self>, conn: ConnectionInfo) {
        self.conns.remove(&conn.conn);
    }

    fn on_handler_event(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        from: ConnectionInfo,
        event: HandlerEvent,
    ) {
        let (node, conn) = (from.node, from.conn);
        match event {
            HandlerEvent::Rtt(rtt) => {
                if let Some(s) = self.conns.get_mut(&conn) {
                    let r = match &mut s.rtt {
                        Some(r) => {
                            r.record(rtt);
                            *r
                        }
                        None => *s.rtt.insert(RttStats::first(rtt)),
                    };
                    agent.report_rtt(conn, r.smoothed);
                }
                if self.config.emit_rtt {
                    agent.emit(Event {
                        peer: node,
                        conn,
                        result: Ok(rtt),
                    });
                }
            }
            HandlerEvent::Failed(failure) => {
                agent.emit(Event {
                    peer: node,
                    conn,
                    result: Err(failure),
                });
                if self.config.close_on_failure {
                    agent.close(conn);
                }
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
            Request::Stats => agent.answer(
                answer,
                Response::Stats(self.conns.values().copied().collect()),
            ),
        }
    }
}
