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

/// Timer tokens.
const PING: u64 = 0;
const TIMEOUT: u64 = 1;

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
        agent.schedule_after(self.interval, PING);
    }

    /// The timeout check is due when the neighbour has been silent for
    /// `timeout` since its last answer (plus a microsecond, so "longer than").
    fn arm_timeout(&self, agent: &mut ConnectionAgent<'_, Self>) {
        let due = self.last_seen + self.timeout + Duration::from_micros(1);
        agent.schedule_at(due, TIMEOUT);
    }
}

impl ConnectionHandler for Handler {
    type Msg = Message;
    type FromBehavior = ();
    type ToBehavior = HandlerEvent;

    fn on_opened(&mut self, agent: &mut ConnectionAgent<'_, Self>) {
        self.last_seen = agent.now();
        self.ping(agent);
        self.arm_timeout(agent);
    }

    fn on_timer(&mut self, agent: &mut ConnectionAgent<'_, Self>, token: u64) {
        match token {
            PING => self.ping(agent),
            TIMEOUT => {
                let silent_for = agent.now() - self.last_seen;
                if silent_for <= self.timeout {
                    // Answers came since this was set: check again later.
                    self.arm_timeout(agent);
                } else if !self.failed {
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
            _ => {}
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
                if self.failed {
                    // Recovered: watch it again.
                    self.failed = false;
                    self.arm_timeout(agent);
                }
                agent.emit_to_behavior(HandlerEvent::Rtt(rtt));
            }
        }
    }
}
