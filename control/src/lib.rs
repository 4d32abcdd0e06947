//! sluice's control plane as a library: what the `sluice` binary, the end-to-end tests, the
//! demo and the benchmark harness share.
#![deny(missing_docs)]
// Unsafe code only in `sys` (and `netlink`'s namespace set-up), each block with a SAFETY comment.
#![deny(unsafe_code)]

pub mod api;
pub mod client;
pub mod clock;
pub mod cni;
pub mod compile;
pub mod daemon;
pub mod daemonlab;
pub mod dns;
pub mod ipam;
pub mod lab;
pub mod model;
#[allow(unsafe_code)]
pub mod netlink;
pub mod plugins;
pub mod publish;
pub mod state;
pub mod store;
pub mod sys;
