//! Transports for plexus.
