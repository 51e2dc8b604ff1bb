//! In-process transport: bounded channels between endpoints of one
//! [`MemoryHub`]. Addresses are `mem://N`.
//!
//! There is no cryptography: the hub knows which node registered each
//! address and vouches for identities, and compares network keys directly.
//! Frames keep their order; each direction holds at most 1,024 frames in
//! flight (a writer waits when it is full).

use crate::TransportConfig;
use parking_lot::Mutex;
use plexus_network::runtime::{
    BoxFuture, Connection, DialError, FrameReader, FrameSink, FrameWriter, Outbound, OutboundQueue,
    Transport,
};
use plexus_network::{Address, NodeId};
use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use tokio::sync::mpsc;

const IN_FLIGHT: usize = 1024;

struct Listener {
    node: NodeId,
    key: [u8; 32],
    max_frame: usize,
    incoming: mpsc::Sender<Connection>,
}

/// The switchboard memory transports of one process share.
#[derive(Clone, Default)]
pub struct MemoryHub {
    listeners: Arc<Mutex<HashMap<u64, Listener>>>,
}

impl std::fmt::Debug for MemoryHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemoryHub({} listeners)", self.listeners.lock().len())
    }
}

impl MemoryHub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }
}

/// One node's endpoint on a hub.
#[derive(Debug)]
pub struct MemoryTransport {
    hub: MemoryHub,
    addr: u64,
    node: NodeId,
    config: TransportConfig,
}

impl MemoryTransport {
    /// The endpoint `mem://addr` of `node` on `hub`. It accepts once the
    /// runtime starts it.
    pub fn new(hub: &MemoryHub, addr: u64, node: NodeId, config: TransportConfig) -> Self {
        MemoryTransport {
            hub: hub.clone(),
            addr,
            node,
            config,
        }
    }
}

fn pipe(
    node: NodeId,
    addr: Address,
    tx: mpsc::Sender<Vec<u8>>,
    rx: mpsc::Receiver<Vec<u8>>,
    max: usize,
) -> Connection {
    Connection {
        node,
        addr,
        writer: Box::new(Writer { tx, max }),
        reader: Box::new(Reader { rx, max }),
        rtt: None,
    }
}

struct Reader {
    rx: mpsc::Receiver<Vec<u8>>,
    max: usize,
}

impl FrameReader for Reader {
    fn run(mut self: Box<Self>, sink: FrameSink) -> BoxFuture<'static, io::Result<()>> {
        Box::pin(async move {
            while let Some(f) = self.rx.recv().await {
                let mut batch = vec![f];
                while batch.len() < 64 {
                    match self.rx.try_recv() {
                        Ok(f) => batch.push(f),
                        Err(_) => break,
                    }
                }
                if let Some(big) = batch.iter().find(|f| f.len() > self.max) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("oversized frame: {} bytes, maximum {}", big.len(), self.max),
                    ));
                }
                if sink.deliver(batch).await.is_err() {
                    break;
                }
            }
            Ok(())
        })
    }
}

struct Writer {
    tx: mpsc::Sender<Vec<u8>>,
    max: usize,
}

impl FrameWriter for Writer {
    fn run(self: Box<Self>, mut queue: OutboundQueue) -> BoxFuture<'static, io::Result<()>> {
        Box::pin(async move {
            let mut batch = Vec::new();
            while queue.next_batch(&mut batch, 64).await.is_some() {
                for item in batch.drain(..) {
                    match item {
                        Outbound::Frame { bytes, .. } if bytes.len() > self.max => {
                            log::warn!(
                                "mem: dropping a {}-byte frame over the maximum",
                                bytes.len()
                            );
                        }
                        Outbound::Frame { bytes, credit, .. } => {
                            let _credit = credit; // returned once handed over
                            if self.tx.send(bytes).await.is_err() {
                                return Err(io::Error::new(io::ErrorKind::BrokenPipe, "peer gone"));
                            }
                        }
                        Outbound::Close(_) => return Ok(()),
                    }
                }
            }
            Ok(())
        })
    }
}

impl Transport for MemoryTransport {
    fn scheme(&self) -> &'static str {
        "mem"
    }

    fn listen_addrs(&self) -> Vec<Address> {
        vec![Address::Memory(self.addr)]
    }

    fn start(&self, incoming: mpsc::Sender<Connection>) {
        self.hub.listeners.lock().insert(
            self.addr,
            Listener {
                node: self.node,
                key: self.config.key(),
                max_frame: self.config.max_frame_size,
                incoming,
            },
        );
    }

    fn dial(
        &self,
        addr: Address,
        expected: NodeId,
    ) -> BoxFuture<'static, Result<Connection, DialError>> {
        let hub = self.hub.clone();
        let (me, my_addr, key, max) = (
            self.node,
            self.addr,
            self.config.key(),
            self.config.max_frame_size,
        );
        Box::pin(async move {
            let Address::Memory(n) = addr else {
                return Err(DialError::NoTransport(addr.to_string()));
            };
            let (node, lkey, lmax, incoming) = {
                let l = hub.listeners.lock();
                let l = l
                    .get(&n)
                    .ok_or_else(|| DialError::Failed(format!("nothing listens at {addr}")))?;
                (l.node, l.key, l.max_frame, l.incoming.clone())
            };
            if node != expected {
                return Err(DialError::IdentityMismatch {
                    expected,
                    actual: node,
                });
            }
            if lkey != key {
                return Err(DialError::NetworkKey);
            }
            let (a_tx, a_rx) = mpsc::channel(IN_FLIGHT);
            let (b_tx, b_rx) = mpsc::channel(IN_FLIGHT);
            // Each side enforces its own maximum on what it reads and writes.
            let theirs = pipe(me, Address::Memory(my_addr), b_tx, a_rx, lmax);
            incoming
                .send(theirs)
                .await
                .map_err(|_| DialError::Failed(format!("{addr} stopped")))?;
            Ok(pipe(node, addr, a_tx, b_rx, max))
        })
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        self.hub.listeners.lock().remove(&self.addr);
        Box::pin(async {})
    }
}
