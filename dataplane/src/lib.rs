//! sluice's dataplane: the sans-IO packet core (wire views, bridge, gateway, NAPT, port
//! forwarding) and the thin I/O ports that feed it batches of frames.
#![deny(missing_docs)]

pub mod batch;
pub mod config;
pub mod counters;
pub mod frame;
pub mod port;
pub mod time;
pub mod wire;
