//! Helpers shared by the plexus benchmarks.
