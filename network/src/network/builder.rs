//! Building a core: its id, router, behaviours and settings.

use super::{Network, ServiceIndex};
use crate::config::NetworkConfig;
use crate::error::BuildError;
use crate::plugin::slot::{ErasedBehavior, Slot};
use crate::{Address, NetworkBehavior, NodeId, RouterTable};
use std::sync::Arc;

/// Builds a [`Network`]: `Network::builder(id, router).behavior(…).build()`.
pub struct NetworkBuilder {
    local: NodeId,
    router: Arc<dyn RouterTable>,
    config: NetworkConfig,
    behaviors: Vec<Box<dyn ErasedBehavior>>,
    bootstrap: Vec<(NodeId, Address, bool)>,
}

impl std::fmt::Debug for NetworkBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkBuilder")
            .field("local", &self.local)
            .field("config", &self.config)
            .field("behaviors", &self.behaviors.len())
            .finish()
    }
}

impl NetworkBuilder {
    pub(super) fn new(local: NodeId, router: Arc<dyn RouterTable>) -> Self {
        NetworkBuilder {
            local,
            router,
            config: NetworkConfig::default(),
            behaviors: Vec::new(),
            bootstrap: Vec::new(),
        }
    }

    /// Replaces the whole configuration, including what the setters below
    /// set before it: call it first, then the setters.
    pub fn config(mut self, config: NetworkConfig) -> Self {
        self.config = config;
        self
    }
    /// Seeds the node's RNG. Without it the node seeds from the operating
    /// system; the simulator always seeds from its scenario.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }
    /// Sets the default TTL.
    pub fn default_ttl(mut self, ttl: u8) -> Self {
        self.config.default_ttl = ttl;
        self
    }
    /// Sets the maximum payload size.
    pub fn max_payload(mut self, max: usize) -> Self {
        self.config.max_payload = max;
        self
    }
    /// Sets the connection limit.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.config.max_connections = max;
        self
    }
    /// Adds a bootstrap peer, dialled as soon as the node runs (see
    /// [`BootstrapStatus`](super::BootstrapStatus) for when it is dialled
    /// again).
    pub fn bootstrap(mut self, node: NodeId, addr: Address) -> Self {
        self.bootstrap.push((node, addr, false));
        self
    }
    /// Adds a persistent peer: a link to keep. Dialled as soon as the node
    /// runs and again whenever no connection to it is up — also while the
    /// node has other connections, which a bootstrap peer is not — after a
    /// backoff of 1 s, then 2 s (±20% jitter), reset once a
    /// connection has lasted 30 s. For configured topologies: the links of
    /// a ring, a datacenter's neighbours, the links a partition cut.
    pub fn persistent_peer(mut self, node: NodeId, addr: Address) -> Self {
        self.bootstrap.push((node, addr, true));
        self
    }
    /// Adds a behaviour.
    pub fn behavior<B: NetworkBehavior>(mut self, behavior: B) -> Self {
        self.behaviors.push(Box::new(Slot::new(behavior)));
        self
    }
    /// Builds the core. Fails when two behaviours claim one service, or when
    /// no seed was given and the OS has no randomness to give.
    pub fn build(self) -> Result<Network, BuildError> {
        let mut services = ServiceIndex::new();
        for (i, b) in self.behaviors.iter().enumerate() {
            let s = b.service_id();
            if s == crate::DROP_NOTICE {
                return Err(BuildError::ReservedService(s));
            }
            if services.get(s).is_some() {
                return Err(BuildError::DuplicateService(s));
            }
            // 256 services at most, one behaviour each: `i` fits.
            services.set(s, i);
        }
        let seed = match self.config.seed {
            Some(s) => s,
            None => getrandom::u64().map_err(|e| BuildError::Entropy(e.to_string()))?,
        };
        log::info!(
            "node {}: core built with {} behaviour(s)",
            self.local,
            self.behaviors.len()
        );
        Ok(Network::from_parts(
            self.local,
            self.router,
            self.config,
            seed,
            self.behaviors,
            services,
            self.bootstrap,
        ))
    }
}
