#!/usr/bin/env bash
# The demo: a one-node lab with a frontend, a backend and a database in two namespaces, a policy,
# and the flows the kernel reports, allowed and dropped. Run as root on Debian 12 with the .NET 10 SDK.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
scripts/install-deps.sh
t() { ./trellis "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Building and starting the lab (node1: agent + 3 pods)"
t lab down >/dev/null
t lab up -f examples/shop/lab.yaml
t endpoint list

ip_of() { t endpoint list -o json | python3 -c "import json,sys; print(next(e['ip'] for e in json.load(sys.stdin) if e['pod']=='$1'))"; }
BACKEND=$(ip_of backend); DB=$(ip_of db)
# Wait until the servers inside the pods listen.
for i in $(seq 50); do t lab exec backend -n shop -- curl -s -o /dev/null "http://127.0.0.1:8080/" && break; sleep 0.2; done

try() { # try NAME POD NS -- CMD...
  local name=$1 pod=$2 ns=$3; shift 4
  if t lab exec "$pod" -n "$ns" -- "$@" >/dev/null 2>&1; then printf '  %-40s \033[32mconnected\033[0m\n' "$name"; else printf '  %-40s \033[31mblocked\033[0m\n' "$name"; fi
}
probe() {
  try "shop/frontend -> shop/backend:8080 (HTTP)" frontend shop -- curl -s -m 2 "http://$BACKEND:8080/"
  try "shop/frontend -> data/db:5432" frontend shop -- socat -T2 /dev/null "TCP:$DB:5432,connect-timeout=2"
  try "shop/backend  -> data/db:5432" backend shop -- socat -T2 /dev/null "TCP:$DB:5432,connect-timeout=2"
  try "data/db       -> shop/backend:8080" db data -- curl -s -m 2 "http://$BACKEND:8080/"
}

step "Before any policy: everything may talk"
probe

step "Applying examples/shop/policy.yaml (CiliumNetworkPolicy)"
t policy apply -f examples/shop/policy.yaml
sleep 0.5
probe

step "Flows the datapath reported (trellis observe)"
t observe --last 40

step "Only the drops (trellis observe --verdict DROPPED)"
t observe --verdict DROPPED --last 10

step "Services: ClusterIPs load-balanced in the kernel at connect() (examples/shop/services.yaml)"
t service apply -f examples/shop/services.yaml
t service list
vip_of() { t service list -o json | python3 -c "import json,sys; print(next(s['clusterIp'] for s in json.load(sys.stdin) if s['name']=='$1'))"; }
BACKEND_VIP=$(vip_of backend); DB_VIP=$(vip_of db)
# Policy applies to the backend the service picked, exactly as to direct pod traffic.
try "shop/frontend -> backend service $BACKEND_VIP:80" frontend shop -- curl -s -m 2 "http://$BACKEND_VIP/"
try "shop/frontend -> db service $DB_VIP:5432" frontend shop -- socat -T2 /dev/null "TCP:$DB_VIP:5432,connect-timeout=2"
try "shop/backend  -> db service $DB_VIP:5432" backend shop -- socat -T2 /dev/null "TCP:$DB_VIP:5432,connect-timeout=2"
sleep 0.3
t observe --last 8

step "L7: HTTP rules enforced by the node's one shared proxy (examples/shop/l7-policy.yaml)"
t policy apply -f examples/shop/l7-policy.yaml
sleep 0.5
code() { # code NAME POD NS -- CURL-ARGS...: the HTTP status the client gets
  local name=$1 pod=$2 ns=$3; shift 4
  printf '  %-40s %s\n' "$name" "$(t lab exec "$pod" -n "$ns" -- curl -s -m 3 -o /dev/null -w '%{http_code}' "$@" || true)"
}
code "GET  /          (allowed)" frontend shop -- "http://$BACKEND:8080/"
code "GET  /public/x  (allowed, 404 upstream)" frontend shop -- "http://$BACKEND:8080/public/x"
code "GET  /admin     (denied by L7: 403)" frontend shop -- "http://$BACKEND:8080/admin"
code "POST /          (denied by L7: 403)" frontend shop -- -X POST "http://$BACKEND:8080/"
sleep 0.3
t observe --protocol http --last 4

step "Service map of the last 5 minutes (trellis map): dropped edges in red"
t map -f /tmp/trellis-demo-map.svg

cat <<'TXT'

The lab is still running. Try:
  ./trellis status                      # agent, BPF programs, maps
  ./trellis observe --follow            # live flows (Ctrl-C to stop)
  ./trellis lab exec frontend -n shop -- curl -s http://10.200.0.3:8080/
  ./trellis service list                # frontends -> backends, with their states
  ./trellis observe --from-pod shop/frontend --verdict DROPPED   # why, and by which policy
  ./trellis observe --protocol http     # the L7 proxy's requests (method, URL, status, latency)
  ./trellis monitor --type drop         # raw datapath events (Ctrl-C to stop)
  ./trellis map -f map.png              # the picture (open /tmp/trellis-demo-map.svg for this run's)
  ./trellis policy delete backend-from-frontend -n shop
  ./trellis lab down                    # remove everything
TXT
