//! The command line, flag for flag slirp4netns's, because podman and RootlessKit read
//! `--help` to decide which flags to pass.
#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use clap::{ArgAction, Parser, ValueEnum};
use sluice_dataplane::wire::MacAddr;

use crate::tcp_smoltcp::TcpEngine;

/// The largest MTU slirp4netns accepts.
pub const MAX_MTU: u16 = 65520;

/// How the first positional argument names the network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetnsType {
    /// A process id: its `/proc/PID/ns/net` (and `ns/user`).
    Pid,
    /// A path to a network namespace file (e.g. a bind mount under /run/user/UID/netns).
    Path,
}

/// sluice-slirp's options (the same as slirp4netns 1.2's).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "sluice-slirp",
    version = concat!("version ", env!("CARGO_PKG_VERSION"), "\nslirp4netns-compatible"),
    about = "User-mode networking for unprivileged network namespaces.",
    override_usage = "sluice-slirp [OPTION]... PID|PATH [TAPNAME]",
    disable_version_flag = true,
    disable_help_flag = true
)]
pub struct Options {
    /// bring up the interface
    #[arg(short = 'c', long)]
    pub configure: bool,
    /// specify the FD for terminating sluice-slirp
    #[arg(short = 'e', long, value_name = "FD")]
    pub exit_fd: Option<i32>,
    /// specify the FD to write to when the network is configured
    #[arg(short = 'r', long, value_name = "FD")]
    pub ready_fd: Option<i32>,
    /// specify MTU (default=1500, max=65520)
    #[arg(short = 'm', long, value_name = "MTU", default_value_t = 1500,
        hide_default_value = true,
          value_parser = clap::value_parser!(u16).range(68..=i64::from(MAX_MTU)))]
    pub mtu: u16,
    /// specify network address CIDR (default=10.0.2.0/24)
    #[arg(
        long,
        value_name = "CIDR",
        default_value = "10.0.2.0/24",
        hide_default_value = true
    )]
    pub cidr: String,
    /// prohibit connecting to 127.0.0.1:* on the host namespace
    #[arg(long)]
    pub disable_host_loopback: bool,
    /// specify network namespace type ([path|pid], default=pid)
    #[arg(long, value_name = "TYPE", value_enum, default_value_t = NetnsType::Pid,
          hide_default_value = true, hide_possible_values = true)]
    pub netns_type: NetnsType,
    /// specify user namespace path
    #[arg(long, value_name = "PATH")]
    pub userns_path: Option<PathBuf>,
    /// specify API socket path
    #[arg(short = 'a', long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
    /// enable IPv6 (experimental)
    #[arg(short = '6', long)]
    pub enable_ipv6: bool,
    /// disables 10.0.2.3 (or configured internal ip) to host dns redirect
    #[arg(long)]
    pub disable_dns: bool,
    /// sets outbound ipv4 address to bound interface
    #[arg(long, value_name = "IPv4")]
    pub outbound_addr: Option<Ipv4Addr>,
    /// sets outbound ipv6 address to bound interface
    #[arg(long, value_name = "IPv6")]
    pub outbound_addr6: Option<Ipv6Addr>,
    /// specify the MAC address of the TAP (only valid with -c)
    #[arg(long, value_name = "MAC")]
    pub macaddress: Option<MacAddr>,
    /// create a new mount namespace and pivot_root into an empty directory
    #[arg(long)]
    pub enable_sandbox: bool,
    /// enable seccomp to limit syscalls
    #[arg(long)]
    pub enable_seccomp: bool,
    /// The TCP translation (not slirp4netns's; kept to measure smoltcp against the default)
    #[arg(long, value_name = "ENGINE", value_enum, default_value_t = TcpEngine::default(), hide = true)]
    pub tcp_engine: TcpEngine,
    /// show this help and exit
    #[arg(short = 'h', long, action = ArgAction::Help)]
    pub help: Option<bool>,
    /// show version and exit
    #[arg(short = 'v', long, action = ArgAction::Version)]
    pub version: Option<bool>,
    /// the target: a process id, or a namespace path with --netns-type=path
    #[arg(value_name = "PID|PATH")]
    pub target: String,
    /// the TAP device to create in the namespace
    #[arg(value_name = "TAPNAME", default_value = "tap0")]
    pub tapname: String,
}

/// Why the options do not make sense together.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionsError {
    /// `-r` only makes sense once the interface is configured.
    #[error("the option -r FD requires -c")]
    ReadyNeedsConfigure,
    /// `--macaddress` sets the TAP's address while configuring it.
    #[error("--macaddress requires -c")]
    MacNeedsConfigure,
    /// With `--netns-type=pid` the target must be a number.
    #[error("{0:?} is not a PID (use --netns-type=path for a path)")]
    BadPid(String),
    /// The TAP name does not fit an interface name.
    #[error("TAPNAME {0:?} must be 1 to 15 bytes")]
    BadTapName(String),
}

/// Where the network namespace (and the user namespace to join first) are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The network namespace file.
    pub netns: PathBuf,
    /// The user namespace file, when one is to be joined.
    pub userns: Option<PathBuf>,
    /// The target process, whose exit ends sluice-slirp.
    pub pid: Option<i32>,
}

impl Options {
    /// Checks the combinations slirp4netns rejects and resolves the target namespaces.
    pub fn target(&self) -> Result<Target, OptionsError> {
        if self.ready_fd.is_some() && !self.configure {
            return Err(OptionsError::ReadyNeedsConfigure);
        }
        if self.macaddress.is_some() && !self.configure {
            return Err(OptionsError::MacNeedsConfigure);
        }
        if self.tapname.is_empty() || self.tapname.len() > 15 {
            return Err(OptionsError::BadTapName(self.tapname.clone()));
        }
        match self.netns_type {
            NetnsType::Pid => {
                let pid: i32 = self
                    .target
                    .parse()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| OptionsError::BadPid(self.target.clone()))?;
                Ok(Target {
                    netns: format!("/proc/{pid}/ns/net").into(),
                    userns: Some(
                        self.userns_path
                            .clone()
                            .unwrap_or_else(|| format!("/proc/{pid}/ns/user").into()),
                    ),
                    pid: Some(pid),
                })
            }
            NetnsType::Path => Ok(Target {
                netns: PathBuf::from(&self.target),
                userns: self.userns_path.clone(),
                pid: None,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Options {
        Options::try_parse_from(std::iter::once("sluice-slirp").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn podman_command_line_parses() {
        let o = parse(&[
            "--disable-host-loopback",
            "--mtu=65520",
            "--enable-sandbox",
            "--enable-seccomp",
            "--enable-ipv6",
            "-c",
            "-e",
            "3",
            "-r",
            "4",
            "--netns-type=path",
            "/run/user/1000/netns/netns-x",
            "tap0",
        ]);
        assert!(o.configure && o.disable_host_loopback && o.enable_ipv6);
        assert_eq!((o.mtu, o.exit_fd, o.ready_fd), (65520, Some(3), Some(4)));
        let t = o.target().unwrap();
        assert_eq!(t.netns, PathBuf::from("/run/user/1000/netns/netns-x"));
        assert_eq!((t.userns, t.pid), (None, None));
    }

    #[test]
    fn pid_target_joins_its_user_namespace() {
        let o = parse(&["-c", "1234", "tap1", "--api-socket", "/tmp/a.sock"]);
        let t = o.target().unwrap();
        assert_eq!(t.netns, PathBuf::from("/proc/1234/ns/net"));
        assert_eq!(t.userns, Some(PathBuf::from("/proc/1234/ns/user")));
        assert_eq!(o.api_socket, Some(PathBuf::from("/tmp/a.sock")));
        assert_eq!(parse(&["1"]).tapname, "tap0");
    }

    #[test]
    fn rejected_combinations() {
        assert_eq!(
            parse(&["-r", "4", "1", "tap0"]).target(),
            Err(OptionsError::ReadyNeedsConfigure)
        );
        assert!(matches!(
            parse(&["abc", "tap0"]).target(),
            Err(OptionsError::BadPid(_))
        ));
        assert!(Options::try_parse_from(["x", "--mtu=65521", "1", "tap0"]).is_err());
        assert!(Options::try_parse_from(["x", "--mtu=0", "1", "tap0"]).is_err());
        assert!(matches!(
            parse(&["1", "a-name-longer-than-15"]).target(),
            Err(OptionsError::BadTapName(_))
        ));
    }

    #[test]
    fn help_names_the_flags_podman_looks_for() {
        let help = Options::command().render_help().to_string();
        for flag in [
            "--netns-type",
            "--userns-path",
            "--enable-sandbox",
            "--enable-seccomp",
            "--disable-host-loopback",
            "--mtu",
            "--enable-ipv6",
            "--api-socket",
            "--cidr",
            "--outbound-addr6",
            "--macaddress",
            "--disable-dns",
            "--exit-fd",
            "--ready-fd",
        ] {
            assert!(help.contains(flag), "{flag} missing in:\n{help}");
        }
    }
}
