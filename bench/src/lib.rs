//! Benchmark support for sluice: the end-to-end harness (kernel bridge vs sluice in namespaces).

pub mod e2e;
