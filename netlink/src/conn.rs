//! The plumbing under the netlink calls: rtnetlink connections in the current namespace or in
//! a sandbox's (a socket created on a short-lived thread that joined the namespace), each
//! request's error naming the step, interface and namespace.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::{FromRawFd, IntoRawFd};

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::sys::TokioSocket;
use rtnetlink::Handle;
use tokio::task::JoinHandle;

use super::{NetlinkError, Step};

/// What the namespace label of an error says for the caller's own namespace.
const CURRENT_NS: &str = "the current namespace";

/// Runs `f` on a fresh OS thread that has joined the network namespace `ns` (labelled `label`
/// in errors), and returns its result without blocking the caller's runtime. The thread ends
/// with `f`, so its namespace change never leaks into other work.
pub(super) async fn in_netns<T, F>(ns: &File, label: &str, f: F) -> Result<T, NetlinkError>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let err = |op, source| NetlinkError::Netns {
        netns: label.into(),
        op,
        source,
    };
    let fd = ns
        .try_clone()
        .map_err(|e| err("duplicate the descriptor of", e))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("sluice-netns".into())
        .spawn(move || {
            // Only this thread changes namespace: it runs `f` alone and ends right after.
            let res = match sluice_sys::enter_netns(&fd) {
                Ok(()) => f().map_err(|e| ("work in", e)),
                Err(e) => Err(("enter", e)),
            };
            // The receiver only goes away if the caller's future was dropped: nothing to tell.
            let _ = tx.send(res);
        })
        .map_err(|e| err("start a thread for", e))?;
    match rx.await {
        Ok(res) => res.map_err(|(op, e)| err(op, e)),
        Err(_) => Err(err(
            "work in",
            io::Error::other("the namespace thread ended without an answer"),
        )),
    }
}

pub(super) use sluice_sys::route_socket;

/// An rtnetlink connection driven by a task of the caller's runtime; the task stops on drop.
pub(super) struct Conn {
    pub(super) handle: Handle,
    task: JoinHandle<()>,
    pub(super) netns: String,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Conn {
    /// A connection in the caller's own namespace.
    pub(super) fn current() -> Result<Conn, NetlinkError> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|source| NetlinkError::Netns {
                netns: CURRENT_NS.into(),
                op: "open a netlink socket in",
                source,
            })?;
        Ok(Conn {
            handle,
            task: tokio::spawn(conn),
            netns: CURRENT_NS.into(),
        })
    }

    /// A connection in the sandbox's namespace `ns`.
    pub(super) async fn sandbox(ns: &File, label: &str) -> Result<Conn, NetlinkError> {
        let fd = in_netns(ns, label, route_socket).await?;
        // SAFETY: ownership of the open netlink socket passes from `fd` to the TokioSocket.
        let socket = unsafe { TokioSocket::from_raw_fd(fd.into_raw_fd()) };
        let (conn, handle, _) = rtnetlink::from_socket(socket);
        Ok(Conn {
            handle,
            task: tokio::spawn(conn),
            netns: label.into(),
        })
    }

    pub(super) fn fail(&self, step: Step, ifname: &str, e: rtnetlink::Error) -> NetlinkError {
        NetlinkError::Request {
            step,
            ifname: ifname.into(),
            netns: self.netns.clone(),
            source: to_io(e),
        }
    }

    /// Runs one request, naming the operation and interface in its error.
    pub(super) async fn run<F>(&self, step: Step, ifname: &str, req: F) -> Result<(), NetlinkError>
    where
        F: Future<Output = Result<(), rtnetlink::Error>>,
    {
        req.await.map_err(|e| self.fail(step, ifname, e))
    }

    /// The link called `name`, or `None` if there is none.
    pub(super) async fn link(&self, name: &str) -> Result<Option<LinkMessage>, NetlinkError> {
        let mut req = self.handle.link().get().match_name(name.into()).execute();
        match req.try_next().await {
            Ok(link) => Ok(link),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(self.fail(Step::LookUp, name, e)),
        }
    }

    /// Deletes the link called `name` (a veth takes its peer along).
    pub(super) async fn delete(&self, name: &str) -> Result<(), NetlinkError> {
        let mut req = self.handle.link().del(0);
        req.message_mut()
            .attributes
            .push(LinkAttribute::IfName(name.into()));
        self.run(Step::Delete, name, req.execute()).await
    }

    /// Deletes `name` after a failed step, keeping the step's error as the one reported.
    pub(super) async fn roll_back(&self, name: &str, cause: NetlinkError) -> NetlinkError {
        if let Err(e) = self.delete(name).await {
            tracing::error!(error = %e, %cause, "rolling back a failed attach");
        }
        cause
    }
}

pub(super) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

pub(super) fn to_io(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io(),
        other => io::Error::other(other),
    }
}

pub(super) fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

pub(super) fn link_kind(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k),
            _ => None,
        }),
        _ => None,
    })
}
