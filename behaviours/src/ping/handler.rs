//! Per-connection ping state. Needs only the protocol's message type: the
//! handler's agent is typed by the handler, not by the behaviour.

use super::protocol::Message;
use super::{Config, Failure};
use plexus_network::{ConnectionAgent, ConnectionHandler, Incoming, Instant};
use std::time::Duration;

/// What a handler tells its behaviour.
#[derive(Debug, Clone, Copy)]
pub enum HandlerEvent {
    /// A round trip was measured.
    Rtt(Duration),
    /// The neighbour stopped answering.
    Failed(Failure),
}

/// The timer token.
const PING: u64 = 0;

/// Pings its connection every `interval` and watches for answers.
#[derive(Debug)]
pub struct Handler {
    interval: Duration,
    timeout: Duration,
    seq: u32,
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
            last_seen: Instant::ZERO,
            failed: false,
        }
    }

    fn ping(&mut self, agent: &mut ConnectionAgent<'_, Self>) {
        self.seq = self.seq.wrapping_add(1);
        agent.send(Message::Ping {
            seq: self.seq,
            sent_at_us: agent.now().as_micros(),
        });
        // Every handler of a node pings on the same grid (one phase per
        // node, from its id): the node wakes once per interval, not once
        // per connection, and nodes do not all wake at once.
        let every = self.interval.as_micros().max(1) as u64;
        let phase = agent.local_node().0 % every;
        let now = agent.now().as_micros();
        let next = (now.saturating_sub(phase) / every + 1) * every + phase;
        agent.schedule_at(Instant::from_micros(next), PING);
    }

    /// Declares the neighbour failed if it has been silent past the timeout.
    fn check(&mut self, agent: &mut ConnectionAgent<'_, Self>) {
        let silent_for = agent.now() - self.last_seen;
        if !self.failed && silent_for > self.timeout {
            self.failed = true;
            log::debug!(
                "node {} {}: ping: {} silent for {silent_for:?}",
                agent.local_node(),
                agent.conn(),
                agent.remote_node()
            );
            agent.emit_to_behavior(HandlerEvent::Failed(Failure::Timeout { silent_for }));
        }
    }
}

impl ConnectionHandler for Handler {
    type Msg = Message;
    type FromBehavior = ();
    type ToBehavior = HandlerEvent;

    fn on_opened(&mut self, agent: &mut ConnectionAgent<'_, Self>) {
        self.last_seen = agent.now();
        self.ping(agent);
    }

    fn on_timer(&mut self, agent: &mut ConnectionAgent<'_, Self>, token: u64) {
        if token == PING {
            self.check(agent);
            self.ping(agent);
        }
    }

    fn on_message(&mut self, agent: &mut ConnectionAgent<'_, Self>, msg: Incoming<Message>) {
        match msg.msg {
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
                agent.emit_to_behavior(HandlerEvent::Rtt(rtt));
            }
        }
    }
}
