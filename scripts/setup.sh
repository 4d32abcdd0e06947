#!/usr/bin/env bash
# Installs the system packages sluice's demo, tests and benchmarks use (Debian 12), if missing.
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip       || need+=(iproute2)
have ping     || need+=(iputils-ping)
have iperf3   || need+=(iperf3)
have sockperf || need+=(sockperf)
have trafgen  || need+=(netsniff-ng)
have tcpdump  || need+=(tcpdump)
have ethtool  || need+=(ethtool)
have iptables || need+=(iptables)
have nc       || need+=(netcat-openbsd)
have socat    || need+=(socat)
have pgrep    || need+=(procps)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing packages ${need[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "setup: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Rootless networking (sluice-slirp, its tests) needs /dev/net/tun open to users, 0666 as Debian ships it.
if [ "$(id -u)" = 0 ] && [ -c /dev/net/tun ]; then chmod 0666 /dev/net/tun; fi
rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt
