//! Per-connection ping state.

use super::{behaviour::Behaviour, Config, Failure, Message};
use plexus_network::{ConnectionAgent, ConnectionEvent, ConnectionHandler, Instant};
use std::time::Duration;

/// What a handler tells its behaviour.
#[derive(Debug, Clone, Copy)]
pub enum HandlerOut {
    /// A round trip was measured.
    Rtt(Duration),
    /// The neighbour stopped answering.
    Failed(Failure),
}

pub(crate) struct Handler {
    interval: Duration,
    timeout: Duration,
    seq: u32,
    next_ping: Instant,
    /// Last answer, or the opening of the connection.
    last_seen: Instant,
    failed: bool,
}

impl Handler {
    pub(crate) fn new(cfg: &Config) -> Self {
        Handler {
            interval: cfg.interval,
            timeout: cfg.timeout,
            seq: 0,
            next_ping: Instant::ZERO,
            last_seen: Instant::ZERO,
            failed: false,
        }
    }

    fn ping(&mut self, agent: &mut ConnectionAgent<'_, Behaviour>) {
        let now = agent.now();
        self.seq = self.seq.wrapping_add(1);
        agent.send(Message::Ping {
            seq: self.seq,
            sent_at_us: now.as_micros(),
        });
        self.next_ping = now + self.interval;
    }
}

impl ConnectionHandler<Behaviour> for Handler {
    fn on_opened(&mut self, agent: &mut ConnectionAgent<'_, Behaviour>) {
        self.last_seen = agent.now();
        self.ping(agent);
    }

    fn on_tick(&mut self, agent: &mut ConnectionAgent<'_, Behaviour>) {
        let now = agent.now();
        let silent_for = now - self.last_seen;
        if !self.failed && silent_for > self.timeout {
            self.failed = true;
            log::debug!(
                "node {} {}: ping: {} silent for {silent_for:?}",
                agent.local_node(),
                agent.conn(),
                agent.remote_node()
            );
            agent.emit_to_behavior(HandlerOut::Failed(Failure::Timeout { silent_for }));
        }
        if now >= self.next_ping {
            self.ping(agent);
        }
    }

    fn on_event(
        &mut self,
        agent: &mut ConnectionAgent<'_, Behaviour>,
        event: ConnectionEvent<Message>,
    ) {
        let ConnectionEvent::Msg(incoming) = event else {
            return;
        };
        match incoming.msg {
            Message::Ping { seq, sent_at_us } => agent.send(Message::Pong { seq, sent_at_us }),
            Message::Pong { seq, sent_at_us } => {
                let now = agent.now();
                // Only answers to pings this handler sent count: a pong from
                // the future or for an unsent sequence number is ignored.
                if sent_at_us > now.as_micros() || seq > self.seq || seq == 0 {
                    log::debug!(
                        "{}: ping: bogus pong from {}",
                        agent.conn(),
                        agent.remote_node()
                    );
                    return;
                }
                let rtt = now - Instant::from_micros(sent_at_us);
                self.last_seen = now;
                self.failed = false;
                agent.emit_to_behavior(HandlerOut::Rtt(rtt));
            }
        }
    }
}
