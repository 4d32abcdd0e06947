#!/bin/bash
# A/B of rootless stacks on one TCP row, alternated round by round (issue 13, wave 6).
# Run as root; needs the user sluicetest (tests/tests/rootless.rs's set-up), iperf3, socat and
# /dev/net/tun mode 0666.
#
#   scripts/rootless-ab.sh ROUNDS SECONDS LABEL=COMMAND...
#
# COMMAND serves the namespace like slirp4netns (`--configure --mtu=65520 --api-socket=...
# PID tap0` are appended): a sluice-slirp binary, `slirp4netns`, or `env VAR=x BINARY`; or
# `pasta` (run with the bench's pasta options).
# MODE=out (namespace -> host, 1 stream, the default), out4 (4 streams), udp64 (64-byte
# datagrams as fast as iperf3 sends, namespace -> host: kpps received), in (host ->
# namespace through an API forward), in4 (4 streams), rr or udprr (sockperf ping-pong, 64 bytes, namespace ->
# host, as the bench's TCP_RR / UDP_RR rows: the figure is the average round trip in us);
# GUESTCC=reno sets the namespace's congestion control.
# Each line: Gbit/s, the CPU of the stack, of the iperf3 client and server, the CPU per
# 64 KiB (stack alone and the three together), the stack's read() calls per 64 KiB, and the
# machine's load. On a loaded machine, `chrt -f 5` (or `nice -n -15`) in front steadies it.
ROUNDS=$1; DUR=$2; shift 2; ARGS=("$@")
PORT=15311
MODE=${MODE:-out}
for r in $(seq 1 $ROUNDS); do
  for spec in "${ARGS[@]}"; do
    label=${spec%%=*}; bin=${spec#*=}
    tmp=$(mktemp -d); chmod 777 $tmp
    runuser -u sluicetest -- sh -c 'exec unshare -r -n sh -c "echo \$\$ > '$tmp'/pid; exec sleep 3600 >&-"' &
    while [ ! -s $tmp/pid ]; do sleep 0.05; done; T=$(cat $tmp/pid)
    args="--configure --mtu=65520 --api-socket=$tmp/api.sock $T tap0"
    # pasta as the bench runs it (its own options; the forward by -t, not the API).
    [ "$bin" = pasta ] && args="--config-net -f -q -4 -I tap0 -a 10.0.2.100 -n 24 -g 10.0.2.2 -m 65520 -u none -T none -U none -t 15312:5201 $T"
    runuser -u sluicetest -- sh -c "echo \$\$ > $tmp/spid; exec $bin $args > $tmp/log 2>&1" &
    while [ ! -s $tmp/spid ]; do sleep 0.05; done; S=$(cat $tmp/spid)
    for i in $(seq 200); do nsenter -t $T -n ip -4 -o addr show dev tap0 2>/dev/null | grep -q 10.0.2.100 && break; sleep 0.05; done
    [ -n "$GUESTCC" ] && nsenter -t $T -n sysctl -qw net.ipv4.tcp_congestion_control=$GUESTCC
    if [ "$MODE" = rr ] || [ "$MODE" = udprr ]; then
      T_=""; [ "$MODE" = rr ] && T_="--tcp"
      sockperf sr -i 127.0.0.1 -p 15313 $T_ >/dev/null 2>&1 & sp=$!
      sleep 0.3
      t0=$(awk '{print $14+$15}' /proc/$S/stat); s0=$(date +%s.%N)
      o=$(nsenter -t $T -n sockperf pp -i 10.0.2.2 -p 15313 -m 64 -t $DUR --full-rtt $T_ 2>&1)
      t1=$(awk '{print $14+$15}' /proc/$S/stat); s1=$(date +%s.%N)
      us=$(echo "$o" | sed -n 's/.*avg-rtt=\([0-9.]*\).*/\1/p' | head -1)
      p99=$(echo "$o" | sed -n 's/.*percentile 99.000 = *\([0-9.]*\).*/\1/p' | head -1)
      cpu=$(python3 -c "print('%.0f'%(($t1-$t0)/$(getconf CLK_TCK)/($s1-$s0)*100))")
      echo "round $r $label ${us:-ERR} us avg (p99 ${p99:-?}) stack $cpu% | load $(cut -d' ' -f1 /proc/loadavg)"
      kill $sp 2>/dev/null; kill $S 2>/dev/null; kill $(cat $tmp/pid) 2>/dev/null
      wait 2>/dev/null
      rm -rf $tmp
      continue
    fi
    if [ "$MODE" = in ] || [ "$MODE" = in4 ]; then
      [ "$bin" != pasta ] && echo '{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"127.0.0.1","host_port":15312,"guest_port":5201}}' | socat - UNIX-CONNECT:$tmp/api.sock >/dev/null
      nsenter -t $T -n iperf3 -s -1 -p 5201 >/dev/null 2>&1 & sp=$!
      sleep 0.3
      t0=$(awk '{print $14+$15}' /proc/$S/stat); s0=$(date +%s.%N); c0=$(head -1 /proc/stat); r0=$(awk '/syscr/{print $2}' /proc/$S/io)
      P=""; [ "$MODE" = in4 ] && P="-P 4"
      out=$(iperf3 -c 127.0.0.1 -p 15312 -t $DUR $P -J 2>&1)
    else
      P=""; [ "$MODE" = out4 ] && P="-P 4"; [ "$MODE" = udp64 ] && P="-u -l 64 -b 0"
      iperf3 -s -1 -B 127.0.0.1 -p $PORT >/dev/null 2>&1 & sp=$!
      sleep 0.3
      t0=$(awk '{print $14+$15}' /proc/$S/stat); s0=$(date +%s.%N); c0=$(head -1 /proc/stat); r0=$(awk '/syscr/{print $2}' /proc/$S/io)
      out=$(nsenter -t $T -n iperf3 -c 10.0.2.2 -p $PORT -t $DUR $P -J 2>&1)
    fi
    t1=$(awk '{print $14+$15}' /proc/$S/stat); s1=$(date +%s.%N); c1=$(head -1 /proc/stat); r1=$(awk '/syscr/{print $2}' /proc/$S/io)
    busy=$(python3 -c "a='$c0'.split()[1:];b='$c1'.split()[1:];d=[int(y)-int(x) for x,y in zip(a,b)];print('%.0f'%(100*(sum(d)-d[3]-d[4])/sum(d)*2))")
    g=$(echo "$out" | python3 -c '
import json,sys
d=json.load(sys.stdin); e=d["end"]; c=e["cpu_utilization_percent"]
r=e.get("sum_received") or e["sum"]
g=r["bits_per_second"]/1e9
k=(r["packets"]-r["lost_packets"])/r["seconds"]/1e3 if "lost_packets" in r else 0
print("%.2f %.0f %.0f %.1f" % (g, c["host_total"], c["remote_total"], k))' 2>/dev/null || echo "ERR 0 0 0")
    set -- $g; gb=$1; cl=$2; sv=$3; kpps=$4; set -- "${ARGS[@]}"
    cpu=$(python3 -c "print('%.0f'%(($t1-$t0)/$(getconf CLK_TCK)/($s1-$s0)*100))")
    per=$(python3 -c "g=float('$gb') if '$gb'!='ERR' else 0; print('%.1f %.1f'%(($cpu)*5.243/g if g else 0, ($cpu+$cl+$sv)*5.243/g if g else 0))")
    [ "$MODE" = udp64 ] && label="$label $kpps kpps"
    echo "round $r $label $gb Gbit/s stack $cpu% client $cl% server $sv% | us CPU per 64KiB stack/all ${per} | reads per 64KiB $(python3 -c "print('%.2f'%(($r1-$r0)/(float('$gb')*1e9/8*($s1-$s0)/65536)))" 2>/dev/null) | machine $busy%/200 load $(cut -d' ' -f1 /proc/loadavg)"
    kill $sp 2>/dev/null; kill $S 2>/dev/null; kill $(cat $tmp/pid) 2>/dev/null
    wait 2>/dev/null
    rm -rf $tmp
  done
done
