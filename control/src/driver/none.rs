//! The null driver (`none`): the predefined network whose containers have only loopback. It
//! has no addressing and takes no endpoints; no other network may use it.

use super::{only_predefined, Created, NetworkDriver};
use crate::model::NetworkSpec;
use crate::state::{State, StateError};

/// The null driver.
pub(super) struct Null;

impl NetworkDriver for Null {
    fn has_ipam(&self) -> bool {
        false
    }

    fn create(&self, _state: &State, spec: &NetworkSpec) -> Result<Created, StateError> {
        Err(only_predefined(spec))
    }
}
