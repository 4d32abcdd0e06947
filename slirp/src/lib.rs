//! sluice-slirp: a slirp4netns-compatible user-mode network for unprivileged network namespaces.
//!
//! The process joins the target's namespaces only to open (and optionally configure) a TAP
//! device, then translates the guest's frames into ordinary sockets of the user on the host
//! side. The translation ([`arp`], [`icmp`], [`dhcp`], [`dns`], [`udp`], [`tcp`]) is sans-IO:
//! pure functions and small state machines over byte buffers, driven by [`engine`].
//! [`tcp_smoltcp`] is the alternative TCP translation through smoltcp, kept for measuring
//! (`--tcp-engine smoltcp`; bench/RESULTS.md has why the passt-style [`tcp`] is the default).

pub mod api;
pub mod arp;
pub mod cli;
pub mod config;
pub mod counters;
pub mod dhcp;
pub mod dns;
pub mod engine;
pub mod flows;
pub mod frame;
pub mod icmp;
pub mod netns;
pub mod sandbox;
pub mod seccomp;
pub mod sys;
pub mod tcp;
pub mod tcp_smoltcp;
pub mod udp;
pub mod udp_batch;
pub mod unreach;
pub mod wake;
