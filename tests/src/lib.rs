//! Support for sluice's integration tests in network namespaces and against real container
//! engines.

pub mod bins;
pub mod engines;
pub mod netns;
pub mod udp;
