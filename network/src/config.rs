//! Settings of one core.

/// Settings of one core. `Default` gives the values each field documents.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// TTL of messages sent without an explicit one. Default 32 hops.
    pub default_ttl: u8,
    /// Largest payload accepted or sent, in bytes. Default 1 MiB.
    pub max_payload: usize,
    /// Most connections (established and being dialled). Default 1024.
    pub max_connections: usize,
    /// Most actions one behaviour may apply while the core handles one
    /// input (a frame, a timer, an application call), counting every action
    /// its callbacks and its handlers' callbacks queue, however nested.
    /// Past it, that behaviour's remaining actions for the input are
    /// discarded, counted ([`NetworkStats`](crate::NetworkStats)) and
    /// logged: a guard against behaviours that ping-pong events forever.
    /// Other behaviours are not affected. Default 100,000.
    pub max_actions_per_input: usize,
    /// Seed of the node's RNG. Default `None`: the builder seeds from the
    /// operating system, so every real node makes its own random choices.
    /// The simulator always sets it (from the scenario's seed), so runs
    /// replay.
    pub seed: Option<u64>,
    /// Most drop notices sent per second. A reliable message of another
    /// node's that dies at this node (in transit: TTL spent, no route, its
    /// next hop's connection closed or queue full; or here: no behaviour
    /// for it, a payload that does not decode, …) is reported to its source
    /// by a notice routed back (service [`DROP_NOTICE`](crate::DROP_NOTICE)),
    /// which the source hears as `DropReason::Remote`. Messages with the
    /// same source, service, rule and reason share one notice with their
    /// count ([`DropReport::count`](crate::DropReport::count)); past this
    /// rate, notices wait for the next second, still counting, so the
    /// limit bounds the notices, not what they report (up to 256 distinct
    /// notices waiting; past that they are counted, not sent). Default 100.
    pub drop_notices_per_sec: u32,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            default_ttl: 32,
            max_payload: 1 << 20,
            max_connections: 1024,
            max_actions_per_input: 100_000,
            seed: None,
            drop_notices_per_sec: 100,
        }
    }
}
