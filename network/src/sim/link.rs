//! The link model: what happens to one frame on one direction of a link.
//!
//! It means what it means on a real link under QUIC or TCP:
//! - a **reliable** frame is never lost, duplicated or reordered. Each loss
//!   the link draws costs one retransmission timeout, and since a
//!   connection's reliable frames share one stream, the frames behind it
//!   wait too (head-of-line blocking: reliable frames stay in order). A link
//!   that loses everything for longer than the idle timeout closes the
//!   connection, as QUIC's idle timeout does;
//! - an **unreliable** frame (a datagram) is lost with the link's loss
//!   probability, may be duplicated, may be held back by `reorder_delay`,
//!   and keeps no order with other frames.
//!
//! Partitions (in [`super::Sim`]) work the same way: an unreliable frame
//! that meets one is dropped; a reliable one is held and delivered, in
//! order, once the partition heals, unless it lasts past the idle timeout,
//! which closes the connection.

use crate::Rng;
use std::time::Duration;

/// Faults and timing of one direction of a link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// One-way base latency. Default 10 ms.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `[0, jitter]` per frame. Default 0.
    pub jitter: Duration,
    /// Probability a transmission is lost: an unreliable frame is gone, a
    /// reliable one is retransmitted. Default 0.
    pub loss: f64,
    /// Probability an unreliable frame is delivered twice. Default 0.
    pub duplicate: f64,
    /// Probability an unreliable frame is held back by `reorder_delay` and
    /// may be overtaken. Default 0.
    pub reorder: f64,
    /// Extra delay of a reordered frame. Default 20 ms.
    pub reorder_delay: Duration,
    /// Delay a reliable frame takes per loss before it is sent again
    /// (QUIC's probe timeout, TCP's RTO). Default 200 ms.
    pub retransmit_timeout: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(20),
            retransmit_timeout: Duration::from_millis(200),
        }
    }
}

impl LinkConfig {
    /// Sets the latency.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }
    /// Sets the jitter.
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }
    /// Sets the loss probability.
    pub fn with_loss(mut self, loss: f64) -> Self {
        self.loss = loss;
        self
    }
    /// Sets the duplication probability (unreliable frames).
    pub fn with_duplicate(mut self, duplicate: f64) -> Self {
        self.duplicate = duplicate;
        self
    }
    /// Sets the reordering probability (unreliable frames).
    pub fn with_reorder(mut self, reorder: f64) -> Self {
        self.reorder = reorder;
        self
    }
    /// Sets the retransmission timeout.
    pub fn with_retransmit_timeout(mut self, rto: Duration) -> Self {
        self.retransmit_timeout = rto;
        self
    }

    /// Base latency plus jitter.
    pub(crate) fn delay(&self, rng: &mut Rng) -> Duration {
        let jitter = self.jitter.as_micros() as u64;
        let extra = if jitter > 0 { rng.below(jitter + 1) } else { 0 };
        self.latency + Duration::from_micros(extra)
    }
}

/// What becomes of one frame.
#[derive(Debug, PartialEq)]
pub(crate) enum Fate {
    /// An unreliable frame lost.
    Lost,
    /// A reliable frame: delivered after `delay`, in order behind earlier
    /// reliable frames, after `retransmits` retransmissions.
    Ordered { delay: Duration, retransmits: u32 },
    /// An unreliable frame: one or two copies, each after its delay, in
    /// no particular order; `reordered` counts copies held back.
    Datagram {
        delays: Vec<Duration>,
        reordered: u32,
    },
    /// The link lost every retransmission for longer than the idle timeout:
    /// the connection closes at the idle timeout.
    Dead,
}

/// Draws the fate of one frame.
pub(crate) fn fate(
    link: &LinkConfig,
    reliable: bool,
    idle_timeout: Duration,
    rng: &mut Rng,
) -> Fate {
    if reliable {
        let mut retransmits = 0u32;
        let mut waited = Duration::ZERO;
        while rng.chance(link.loss) {
            retransmits += 1;
            waited += link.retransmit_timeout;
            if waited >= idle_timeout || link.retransmit_timeout.is_zero() {
                return Fate::Dead;
            }
        }
        return Fate::Ordered {
            delay: link.delay(rng) + waited,
            retransmits,
        };
    }
    if rng.chance(link.loss) {
        return Fate::Lost;
    }
    let copies = if rng.chance(link.duplicate) { 2 } else { 1 };
    let mut delays = Vec::with_capacity(copies);
    let mut reordered = 0;
    for _ in 0..copies {
        let mut d = link.delay(rng);
        if rng.chance(link.reorder) {
            reordered += 1;
            d += link.reorder_delay;
        }
        delays.push(d);
    }
    Fate::Datagram { delays, reordered }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reliable_frame_is_never_lost_only_late() {
        let link = LinkConfig::default().with_loss(0.5);
        let mut rng = Rng::new(1);
        let idle = Duration::from_secs(30);
        let mut late = 0;
        for _ in 0..1000 {
            match fate(&link, true, idle, &mut rng) {
                Fate::Ordered { delay, retransmits } => {
                    assert_eq!(delay, link.latency + link.retransmit_timeout * retransmits);
                    late += u32::from(retransmits > 0);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!((400..600).contains(&late), "{late}");
    }

    #[test]
    fn an_unreliable_frame_is_lost_and_a_dead_link_closes() {
        let mut rng = Rng::new(2);
        let idle = Duration::from_secs(30);
        let all = LinkConfig::default().with_loss(1.0);
        assert_eq!(fate(&all, false, idle, &mut rng), Fate::Lost);
        assert_eq!(fate(&all, true, idle, &mut rng), Fate::Dead);
    }
}
