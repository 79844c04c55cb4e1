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
# python3, socat and curl are the lab's servers and clients.
packages=(clang llvm gcc libc6-dev libbpf-dev libbpf1 bpftool libelf-dev iproute2 util-linux procps coreutils kmod python3 socat curl ca-certificates)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# bpffs for pinned maps and programs.
if ! mount | grep -q ' /sys/fs/bpf type bpf'; then
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
