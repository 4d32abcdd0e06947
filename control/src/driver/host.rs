//! The host driver: the predefined `host` network, whose containers share the host's own
//! stack. It has no addressing and takes no endpoints; no other network may use it.

use super::{only_predefined, Created, NetworkDriver};
use crate::model::NetworkSpec;
use crate::state::{State, StateError};

/// The host driver.
pub(super) struct Host;

impl NetworkDriver for Host {
    fn has_ipam(&self) -> bool {
        false
    }

    fn create(&self, _state: &State, spec: &NetworkSpec) -> Result<Created, StateError> {
        Err(only_predefined(spec))
    }
}
