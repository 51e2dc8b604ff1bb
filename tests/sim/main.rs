//! Multi-node scenarios on the deterministic simulator. One test binary
//! (modules below) so the workspace links once.

mod agents;
mod common;
mod determinism;
mod dv;
mod ping_scale;
mod routing;
