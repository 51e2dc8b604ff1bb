//! Multi-node scenarios on the deterministic simulator. One test binary
//! (modules below) so the workspace links once.

mod agents;
mod common;
mod determinism;
mod dv;
mod link_model;
mod ping_scale;
mod prop;
mod routing;
