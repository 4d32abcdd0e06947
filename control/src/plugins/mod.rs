//! sluice as a plugin of other container engines: they keep their own container lifecycle and
//! ask sluiced (as a client of its engine) for interfaces on sluice's networks.

pub mod docker;
