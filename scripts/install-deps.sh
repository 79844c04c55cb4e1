#!/usr/bin/env bash
# Installs and mounts what Trellis needs on Debian 12 (as root). Idempotent and quick when all is there.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "install-deps: run as root (Trellis loads BPF programs and creates network namespaces)" >&2
  exit 1
fi
if ! command -v dotnet >/dev/null; then
  echo "install-deps: the .NET 10 SDK is required (dotnet on PATH)" >&2
  exit 1
fi

# clang/llvm + libbpf headers + bpftool build the datapath (gcc builds a libbpf layout probe in the tests); iproute2/util-linux/procps plumb the lab;
# python3, socat and curl are the lab's servers and clients; nginx (server) and wrk (load generator) run in lab pods for bench/.
# prometheus (the real server) scrapes the agent's metrics endpoint in tests/Trellis.Integration/Observability.
# graphviz (dot) renders `trellis map` as SVG/PNG.
# python3-grpcio (gRPC's C core) is the third-party client the Hubble observer tests talk to over TCP.
# bench/Trellis.Bench.Mesh: iperf3 (TCP throughput between pods), nftables (the sidecar model's interception in its
# pods), gnuplot-nox (the results chart as PNG, no X11).
# etcd-server (/usr/bin/etcd) is the multi-node state store; tests/Trellis.Agent.Tests/State/Etcd starts a real 3-member
# cluster of it on loopback. etcd-client (etcdctl) is for looking at that state by hand.
packages=(clang llvm gcc libc6-dev libbpf-dev libbpf1 bpftool libelf-dev iproute2 util-linux procps coreutils kmod python3 socat curl ca-certificates nginx wrk prometheus graphviz python3-grpcio haproxy iperf3 nftables gnuplot-nox etcd-server etcd-client)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Packages with a daemon (nginx, prometheus, etcd-server) must not start a system service: the benches run their own nginx inside
  # lab pods, and a start can fail where there is no init system (or port 80 is taken), failing the install.
  # policy-rc.d answering 101 ("action forbidden") stops invoke-rc.d and deb-systemd-invoke; keep one that exists.
  own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    own_policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\n# written by trellis scripts/install-deps.sh for the duration of one apt-get install\nexit 101\n' >"$own_policy"
    chmod 755 "$own_policy"
    trap 'rm -f "$own_policy"' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -n "$own_policy" ]; then rm -f "$own_policy"; trap - EXIT; fi
fi

# etcd-server enables a system etcd on 127.0.0.1:2379 (policy-rc.d only kept it from starting now). Trellis runs its
# own etcd members (tests, multi-node labs): keep the packaged one disabled and stopped, on every run, in case something
# (a reboot, an upgrade without policy-rc.d) started it since.
if [ -d /run/systemd/system ]; then
  if systemctl is-enabled --quiet etcd.service 2>/dev/null || systemctl is-active --quiet etcd.service 2>/dev/null; then
    systemctl disable --now etcd.service >/dev/null 2>&1 || true
  fi
  if systemctl is-active --quiet etcd.service 2>/dev/null; then
    echo "install-deps: the system etcd service is still running; stop it with: systemctl disable --now etcd" >&2
    exit 1
  fi
elif [ -x /etc/init.d/etcd ]; then
  if compgen -G '/etc/rc[2-5].d/S*etcd' >/dev/null; then update-rc.d etcd disable >/dev/null 2>&1 || true; fi
  if /etc/init.d/etcd status >/dev/null 2>&1; then /etc/init.d/etcd stop >/dev/null || true; fi
fi

# bpffs for pinned maps and programs. Read the mount table from the file: with pipefail, `mount | grep -q` fails when
# grep exits at its first match and mount gets SIGPIPE, and a second bpffs mounted over the first hides every pin
# (a running node's maps and programs) from then on.
if ! grep -qs '^[^ ]* /sys/fs/bpf bpf ' /proc/self/mounts; then
  mkdir -p /sys/fs/bpf
  mount -t bpf bpf /sys/fs/bpf
fi
# cgroup v2 for pod cgroups and cgroup BPF programs (hosts may mount only v1).
if ! grep -q ' - cgroup2 ' /proc/self/mountinfo; then
  if [ -d /sys/fs/cgroup/unified ] || mkdir -p /sys/fs/cgroup/unified 2>/dev/null; then
    mount -t cgroup2 none /sys/fs/cgroup/unified
  else
    mkdir -p /run/trellis/cgroup2 && mount -t cgroup2 none /run/trellis/cgroup2
  fi
fi
