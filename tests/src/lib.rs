//! Support for sluice's integration tests in network namespaces and against real container
//! engines.
#![deny(missing_docs)]

pub mod bins;
pub mod bulk;
pub mod capture;
pub mod cli;
pub mod engines;
pub mod netns;
pub mod udp;
