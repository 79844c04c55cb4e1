#!/usr/bin/env bash
# Runs every test: BPF programs in the kernel (BPF_PROG_TEST_RUN), the libbpf binding, the policy engine,
# and integration tests with real namespaces and traffic. Needs root; installs what it needs first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
scripts/install-deps.sh
dotnet build Trellis.slnx -c Release -nologo -v quiet
dotnet test Trellis.slnx -c Release --no-build -nologo --logger "console;verbosity=normal" "$@"
