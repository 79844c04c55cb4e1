#!/usr/bin/env bash
# Runs every test: BPF programs in the kernel (BPF_PROG_TEST_RUN), the libbpf binding, the policy engine,
# and integration tests with real namespaces and traffic. Needs root; installs what it needs first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
scripts/install-deps.sh
dotnet build Trellis.slnx -c Release -nologo -v quiet
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
dotnet test Trellis.slnx -c Release --no-build -nologo --logger "console;verbosity=normal" "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# The plain "N passed, N failed" line, summed over the test projects.
passed=$(awk '/^ +Passed: [0-9]+/ {s+=$2} END {print s+0}' "$log")
failed=$(awk '/^ +Failed: [0-9]+/ {s+=$2} END {print s+0}' "$log")
echo "$passed passed, $failed failed"
[ "$rc" -eq 0 ] || exit "$rc"
# The benchmarks are not tests (no thresholds, figures go to docs/performance.md), but a short smoke run of each
# keeps them from rotting: it must build its lab, measure, report and clean up.
dotnet run -c Release --no-build --project bench/Trellis.Bench.ControlPlane -- --quick
dotnet run -c Release --no-build --project bench/Trellis.Bench.Mesh -- --quick
