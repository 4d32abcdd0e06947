//! Support for sluice's integration tests in network namespaces.
