//! `sluiced`: the daemon that owns the dataplane. The API (HTTP/JSON on a Unix socket) runs
//! on a multithreaded tokio runtime; changes go to the engine thread, which plumbs interfaces
//! with netlink and swaps the dataplane's tables; the dataplane's workers run on threads of
//! their own.

pub mod engine;
pub mod handle;
pub mod http;
pub mod kernel;
pub mod metrics;
pub mod names;
pub mod plumbing;
pub mod server;
pub mod stats;
