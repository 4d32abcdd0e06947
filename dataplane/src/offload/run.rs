//! The offload as the runtime runs it (`--offload tc`): the kernel half loaded once, its TC
//! program attached to every AF_PACKET port (and detached when the port goes), the ports'
//! interface indexes published to the workers, and the offload thread. A kernel that cannot
//! run it leaves the runtime without offload, never failing it.

use std::os::fd::BorrowedFd;
use std::sync::Arc;

use parking_lot::Mutex;
use sluice_offload::Offload;

use super::{OffloadMode, OffloadThread, MAP_CAPACITY};
use crate::config::{PortConfig, PortIo};
use crate::frame::PortId;
use crate::pipeline::Dataplane;
use crate::port::afpacket;

/// The running offload; dropping it stops the thread (flushing the kernel's flows), turns
/// offers off and detaches the TC program from every port.
pub struct OffloadRun {
    dp: Arc<Dataplane>,
    kernel: Arc<Offload>,
    thread: Option<OffloadThread>,
    /// Ports the TC program is attached to, with their interface index.
    attached: Mutex<Vec<(PortId, u32)>>,
}

impl std::fmt::Debug for OffloadRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffloadRun")
            .field("attached", &*self.attached.lock())
            .finish_non_exhaustive()
    }
}

impl OffloadRun {
    /// The offload `mode` asks for, running for `dp`; `None` when off, or when it cannot
    /// run here (the reason goes to `Offloads::take_error`, the runtime runs without it).
    pub fn start(mode: OffloadMode, dp: &Arc<Dataplane>) -> Option<OffloadRun> {
        if mode != OffloadMode::Tc {
            return None;
        }
        Self::load(dp).map_err(|e| dp.offloads().set_error(e)).ok()
    }

    /// Loads the kernel half and starts the thread.
    fn load(dp: &Arc<Dataplane>) -> Result<OffloadRun, String> {
        let kernel = Arc::new(Offload::new(MAP_CAPACITY).map_err(|e| e.to_string())?);
        let thread = OffloadThread::start(Arc::clone(dp), Arc::clone(&kernel))
            .map_err(|e| format!("cannot start the offload thread: {e}"))?;
        dp.offloads().set_enabled(true);
        Ok(OffloadRun {
            dp: Arc::clone(dp),
            kernel,
            thread: Some(thread),
            attached: Mutex::new(Vec::new()),
        })
    }

    /// The socket filter every packet socket of an offloaded port carries.
    pub fn socket_filter(&self) -> BorrowedFd<'_> {
        self.kernel.socket_filter()
    }

    /// Attaches the TC program to `port` once its sockets are open (AF_PACKET ports only:
    /// a TAP port's frames are not on an interface the program can redirect from) and lets
    /// the workers offer its flows. A port the program cannot attach to stays in userspace
    /// (the error goes to `Offloads::take_error`, for the log).
    pub fn port_attached(&self, port: &PortConfig) {
        if let Err(e) = self.attach(port) {
            self.dp.offloads().set_error(e);
        }
    }

    fn attach(&self, port: &PortConfig) -> Result<(), String> {
        if port.io != PortIo::AfPacket {
            return Ok(());
        }
        let ifindex = afpacket::interface_index(&port.name)
            .map_err(|e| format!("offload: {}: {e}", port.name))?;
        self.kernel.attach(ifindex).map_err(|e| e.to_string())?;
        self.attached.lock().push((port.id, ifindex));
        self.dp.offloads().set_ifindex(port.id, ifindex);
        Ok(())
    }

    /// Stops offering `id`'s flows and detaches the TC program from it (before its sockets
    /// close; the table swap without the port flushes its flows).
    pub fn port_detached(&self, id: PortId) {
        self.dp.offloads().set_ifindex(id, 0);
        let mut attached = self.attached.lock();
        attached.retain(|&(p, ifindex)| {
            if p == id {
                let _ = self.kernel.detach(ifindex);
            }
            p != id
        });
    }
}

impl Drop for OffloadRun {
    fn drop(&mut self) {
        self.dp.offloads().set_enabled(false);
        drop(self.thread.take());
        for (id, ifindex) in self.attached.lock().drain(..) {
            self.dp.offloads().set_ifindex(id, 0);
            let _ = self.kernel.detach(ifindex);
        }
    }
}
