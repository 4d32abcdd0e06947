//! sluice's API: the networks, endpoints and views sluiced serves over its socket, the `-p`
//! syntax, the container files' types, and the HTTP client. The CLI, the CNI plugin, the
//! daemon (which re-exports these modules) and the tests share them.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod api;
pub mod client;
pub mod clock;
pub mod files;
pub mod model;
pub mod naming;
pub mod publish;
pub mod validate;
