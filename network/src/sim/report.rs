//! What a simulation records: counters, drops, failures, application
//! events, a readable trace, and the hash of the whole trace.

use crate::{AppEvent, BehaviorFailure, DropReport, Instant, NodeId, ServiceId};
use std::collections::BTreeMap;

/// An application event from a simulated node.
#[derive(Debug)]
pub struct SimEvent {
    /// Virtual time it was emitted.
    pub at: Instant,
    /// The node.
    pub node: NodeId,
    /// The event.
    pub event: AppEvent,
}

/// One line of the readable trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEntry {
    /// Virtual time.
    pub at: Instant,
    /// The node it happened at.
    pub node: NodeId,
    /// What happened.
    pub what: String,
}

/// Counts of what a simulation did, and the hash of its trace.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    /// Frames handed to links.
    pub frames_sent: u64,
    /// Frames delivered to a live node's open connection.
    pub frames_delivered: u64,
    /// Unreliable frames lost to injected loss.
    pub frames_lost: u64,
    /// Retransmissions of reliable frames (each delays its frame, and the
    /// ones behind it, by one retransmission timeout).
    pub frames_retransmitted: u64,
    /// Extra copies of unreliable frames made by injected duplication.
    pub frames_duplicated: u64,
    /// Unreliable frames delayed by injected reordering.
    pub frames_reordered: u64,
    /// Unreliable frames dropped at a partition.
    pub frames_partitioned: u64,
    /// Reliable frames held at a partition until it healed.
    pub frames_held: u64,
    /// Frames that arrived at a dead node or a closed connection.
    pub frames_undeliverable: u64,
    /// Connections established.
    pub connects: u64,
    /// Dials that failed.
    pub connect_failures: u64,
    /// Connections the link model closed: a path that lost everything for
    /// longer than the idle timeout, or a peer that died.
    pub idle_closes: u64,
    /// Frames handed to links, per service (the header's service byte).
    pub frames_by_service: BTreeMap<ServiceId, u64>,
    /// Bytes handed to links, per service.
    pub bytes_by_service: BTreeMap<ServiceId, u64>,
    /// Route changes announced by routers.
    pub route_changes: u64,
    /// Messages the cores dropped, with where and when.
    pub drops: Vec<(Instant, NodeId, DropReport)>,
    /// Behaviours that panicked and were disabled, with where and when.
    pub failures: Vec<(Instant, NodeId, BehaviorFailure)>,
    /// FNV-1a hash over the whole trace.
    pub trace_hash: u64,
}

/// FNV-1a, 64-bit, word-wise: stable across Rust versions and platforms,
/// unlike `DefaultHasher`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv(pub(crate) u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// FNV-1a over 8-byte words (the tail bytewise): the same mixing, an
    /// eighth of the multiplications — every frame of a run goes through it.
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut a = [0u8; 8];
            a.copy_from_slice(w);
            self.0 ^= u64::from_le_bytes(a);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        for b in words.remainder() {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.write(&v.to_le_bytes());
    }
}
