//! sluice's dataplane: the sans-IO packet core (wire views, bridge, gateway, NAPT, port
//! forwarding) and the thin I/O ports that feed it batches of frames.
#![deny(missing_docs)]
// Unsafe code only where allowed item by item (ring memory, syscalls, CPU hints), each block
// with a SAFETY comment.
#![deny(unsafe_code)]

pub mod batch;
pub mod bridge;
pub mod config;
pub mod config_v6;
pub mod counters;
pub mod frame;
pub mod hash;
mod hugepage;
pub mod nat;
pub mod offload;
pub mod overlay;
pub mod pipeline;
pub mod port;
pub mod portfwd;
mod prefetch;
pub mod runtime;
pub mod tables;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod time;
pub mod wire;
