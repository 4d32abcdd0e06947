//! Test support, linked by no production binary: namespace topologies built with `ip` for the
//! end-to-end tests, the benchmark harness and `sluice demo` (the `sluice-demo` binary).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod daemonlab;
pub mod lab;
