//! Benchmark support for sluice.
