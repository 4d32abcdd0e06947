#!/usr/bin/env bash
# Installs the real container engines sluice's plugin tests run against (Debian 12): dockerd
# (docker.io 20.10), podman 4.3 with the CNI backend, the reference CNI plugins, and a static
# busybox to build the test image from; and etcd (server and etcdctl) for the overlay cluster
# test, which starts its own etcd in a namespace. Idempotent and quiet.
#
# The packages must not leave anything running or configured in the root namespace: the tests
# start their own dockerd inside namespaces of their own. Debian's docker.io starts
# docker.service from its postinst (through invoke-rc.d when systemd is not running), which would
# create docker0, iptables rules and ip_forward=1 in the root namespace. A policy-rc.d that
# refuses every start is put in place for the install (if the machine has none), and any
# daemon that appears anyway is stopped and its bridge, rules and sysctl are undone.
set -euo pipefail
pkgs=(docker.io busybox-static podman containernetworking-plugins uidmap etcd-server etcd-client)
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }
need=()
for p in "${pkgs[@]}"; do installed "$p" || need+=("$p"); done
[ "${#need[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "setup-engines: missing packages ${need[*]}; run as root or install them" >&2
  exit 1
fi
echo "setup-engines: installing ${need[*]}" >&2

daemons() { { pgrep -x dockerd; pgrep -x containerd; } | sort || true; }
before_pids=$(daemons)
had_docker0=$(ip link show docker0 >/dev/null 2>&1 && echo yes || echo no)
forward_before=$(cat /proc/sys/net/ipv4/ip_forward)
forward_policy=$(iptables -w -S FORWARD 2>/dev/null | awk '$1 == "-P" {print $3}')
policy=/usr/sbin/policy-rc.d
own_policy=no
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# setup-engines.sh: no service starts during the install\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  own_policy=yes
fi
cleanup_policy() { [ "$own_policy" = yes ] && rm -f "$policy"; return 0; }
trap cleanup_policy EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null

# Safety net: a daemon the install started in the root namespace is stopped and undone.
new_pids=$(comm -13 <(echo "$before_pids") <(daemons) | grep . || true)
if [ -n "$new_pids" ]; then
  echo "setup-engines: the install started daemons ($(echo $new_pids)); stopping them" >&2
  for pid in $new_pids; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 3
  for pid in $new_pids; do kill -KILL "$pid" 2>/dev/null || true; done
  [ "$had_docker0" = no ] && ip link del docker0 2>/dev/null || true
  for table in filter nat; do
    iptables -w -t "$table" -S 2>/dev/null | grep -E '^-A .*DOCKER' | sed 's/^-A /-D /' |
      while read -r rule; do eval "iptables -w -t $table $rule" || true; done
    for chain in $(iptables -w -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^DOCKER/ {print $2}'); do
      iptables -w -t "$table" -F "$chain" || true
      iptables -w -t "$table" -X "$chain" || true
    done
  done
  iptables -w -P FORWARD "${forward_policy:-ACCEPT}"
  echo "$forward_before" >/proc/sys/net/ipv4/ip_forward
fi
