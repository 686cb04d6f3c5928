#!/usr/bin/env bash
# A real Kubernetes control plane on loopback for knm's development and tests: etcd,
# kube-apiserver, kube-controller-manager and kube-scheduler built from their Go modules,
# kwok simulating the nodes' kubelets (pods are scheduled and reach Running), and kubectl.
# Everything is built once and cached under KNM_DEV_HOME (the Go module and build caches
# too); certificates, service-account keys and an admin kubeconfig are made with openssl.
# Idempotent like kafka.sh: `up` builds what is missing and starts what is not running.
#   cluster.sh build|up|down|status|restart|env|kubeconfig
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/common.sh"

# kwok v0.8.0 is built against the v0.36 libraries, so the control plane is 1.36: one module
# builds both, and they share every compiled package.
KUBE_VERSION="${KNM_KUBE_VERSION:-v1.36.1}"
ETCD_VERSION="${KNM_ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KNM_KWOK_VERSION:-v0.8.0}"
NODES="${KNM_DEV_CLUSTER_NODES:-3}"
APISERVER_PORT="${KNM_DEV_APISERVER_PORT:-16443}"
ETCD_PORT="${KNM_DEV_ETCD_PORT:-12379}"
ETCD_PEER_PORT="${KNM_DEV_ETCD_PEER_PORT:-12380}"
CM_PORT="${KNM_DEV_CONTROLLER_MANAGER_PORT:-10257}"
SCHED_PORT="${KNM_DEV_SCHEDULER_PORT:-10259}"
KWOK_PORT="${KNM_DEV_KWOK_PORT:-10247}"
# The seed's portal range, knm's default.
SERVICE_CIDR="${KNM_DEV_SERVICE_CIDR:-10.254.0.0/16}"

DIR="$KNM_DEV_HOME/cluster"
BIN="$DIR/bin"
BUILD="$DIR/build"
PKI="$DIR/pki"
RUN="$DIR/run"
KUBECONFIG_FILE="$DIR/admin.kubeconfig"
export GOMODCACHE="$KNM_DEV_HOME/go/mod"
export GOCACHE="$KNM_DEV_HOME/go/cache"
export GOFLAGS="-mod=mod -buildvcs=false"
export GOTOOLCHAIN=local
export CGO_ENABLED=0
# Two cores: parallel compiles of the large packages only thrash; one link at a time keeps
# the peak memory of linking kube-apiserver (about 2 GiB) to one binary.
GO_PARALLEL="${KNM_DEV_GO_PARALLEL:-2}"

go_bin() { command -v go || { [ -x /usr/local/go/bin/go ] && echo /usr/local/go/bin/go; } || true; }

GO=""
need_go() {
  GO="$(go_bin)"
  [ -n "$GO" ] || { say "Go (1.25 or newer) is needed to build the control plane"; exit 1; }
}

stamp_ok() { [ "$(cat "$1" 2>/dev/null || true)" = "$2" ]; }

# k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with local
# paths; a small main module replaces each of them with its published v0.X.Y instead.
build_kube() {
  local want="kube $KUBE_VERSION kwok $KWOK_VERSION"
  stamp_ok "$BIN/.kube-stamp" "$want" && return
  need_go
  say "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl $KUBE_VERSION and kwok $KWOK_VERSION (cold: many minutes)"
  local mod="$BUILD/kube" staging minor gomod
  rm -rf "$mod" && mkdir -p "$mod" "$BIN"
  minor="${KUBE_VERSION#v1.}"
  staging="v0.${minor}"
  gomod="$("$GO" mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  [ -f "$gomod" ] || { say "could not fetch k8s.io/kubernetes@$KUBE_VERSION's go.mod"; exit 1; }
  {
    echo "module knm.dev/kubebuild"
    echo
    grep -E '^(go|godebug) ' "$gomod"
    echo
    echo "require ("
    echo "	k8s.io/kubernetes $KUBE_VERSION"
    echo "	sigs.k8s.io/kwok $KWOK_VERSION"
    echo ")"
    echo
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#replace \1 => \1 '"$staging"'#p' "$gomod"
  } >"$mod/go.mod"
  cat >"$mod/tools.go" <<'GO'
//go:build tools

// Package tools pins the commands this module builds.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
GO
  (cd "$mod" && "$GO" mod tidy >&2)
  local major="${KUBE_VERSION#v}" ldflags pkg
  major="${major%%.*}"
  minor="${minor%%.*}"
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  (cd "$mod" && "$GO" build -p "$GO_PARALLEL" -trimpath -ldflags "$ldflags" -o "$BIN/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl sigs.k8s.io/kwok/cmd/kwok >&2)
  echo "$want" >"$BIN/.kube-stamp"
}

# go.etcd.io/etcd/server/v3 replaces its sibling modules with local paths too; a main
# module of one line calls its etcdmain.
build_etcd() {
  local want="etcd $ETCD_VERSION"
  stamp_ok "$BIN/.etcd-stamp" "$want" && return
  need_go
  say "building etcd $ETCD_VERSION"
  local mod="$BUILD/etcd"
  rm -rf "$mod" && mkdir -p "$mod" "$BIN"
  printf 'module knm.dev/etcdbuild\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
    "$ETCD_VERSION" >"$mod/go.mod"
  cat >"$mod/main.go" <<'GO'
// Command etcd is etcd's own server main.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$mod" && "$GO" mod tidy >&2 &&
    "$GO" build -p "$GO_PARALLEL" -trimpath -ldflags "-s -w" -o "$BIN/etcd" . >&2)
  echo "$want" >"$BIN/.etcd-stamp"
}

build() {
  command -v openssl >/dev/null || apt_install openssl
  build_etcd
  build_kube
}

# ---- certificates and keys ---------------------------------------------------------------

cert() {  # cert NAME SUBJECT EXTENSIONS: a key and a certificate signed by the cluster's CA
  local name="$1" subject="$2" ext="$3"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/$name.key" 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subject" -out "$PKI/$name.csr" 2>/dev/null
  printf '%s\n' "$ext" >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

pki() {
  [ -f "$PKI/.done" ] && return
  say "making the cluster's CA, certificates and service-account keys in $PKI"
  rm -rf "$PKI" && mkdir -p "$PKI" && chmod 700 "$PKI"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=knm-dev-ca" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$PKI/ca.crt" 2>/dev/null
  # The apiserver answers on loopback and, inside the cluster, as the first service VIP.
  local vip
  vip="$(python3 -c 'import ipaddress,sys; print(ipaddress.ip_network(sys.argv[1])[1])' "$SERVICE_CIDR")"
  cert apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$vip,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  # One admin identity in system:masters for knm's tests and every component: a
  # development cluster on loopback, not a model of production credentials.
  cert admin "/O=system:masters/CN=knm-admin" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
  openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  kubeconfig >"$KUBECONFIG_FILE.new" && mv "$KUBECONFIG_FILE.new" "$KUBECONFIG_FILE"
  chmod 600 "$KUBECONFIG_FILE"
  touch "$PKI/.done"
}

b64() { base64 -w0 <"$1"; }

kubeconfig() {
  cat <<YAML
apiVersion: v1
kind: Config
clusters:
- name: knm-dev
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: knm-admin
  user:
    client-certificate-data: $(b64 "$PKI/admin.crt")
    client-key-data: $(b64 "$PKI/admin.key")
contexts:
- name: knm-dev
  context: {cluster: knm-dev, user: knm-admin}
current-context: knm-dev
YAML
}

# ---- kwok's configuration: the fast stages its module ships ------------------------------

kwok_config() {
  local root="$GOMODCACHE/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage" file first=1
  [ -d "$root" ] || { say "kwok's module is not in $GOMODCACHE; run: $0 build"; exit 1; }
  {
    # The fast node and pod stages; nodes keep their heartbeat through kwok's leases.
    for file in "$root"/node/fast/*.yaml "$root"/node/heartbeat-with-lease/*.yaml \
      "$root"/pod/fast/*.yaml; do
      case "$file" in */kustomization.yaml) continue ;; esac
      [ "$first" -eq 1 ] || echo "---"
      first=0
      cat "$file"
    done
  } >"$DIR/kwok.yaml"
}

# ---- processes ---------------------------------------------------------------------------

start() {  # start NAME COMMAND...: run it in the background unless it runs already
  local name="$1"
  shift
  pid_alive "$RUN/$name.pid" && return
  say "starting $name"
  "$@" >>"$DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
  disown
}

wait_until() {  # wait_until SECONDS NAME COMMAND...: until the command succeeds
  local seconds="$1" name="$2"
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ] || { [ -f "$RUN/$name.pid" ] && ! pid_alive "$RUN/$name.pid"; }; then
      say "$name is not healthy after ${seconds}s; the end of $DIR/logs/$name.log:"
      tail -n 25 "$DIR/logs/$name.log" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
}

kubectl_() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

healthz() {  # healthz PORT: a component's own /healthz on loopback, over TLS
  python3 - "$1" <<'PY'
import ssl, sys, urllib.request
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
with urllib.request.urlopen(f"https://127.0.0.1:{sys.argv[1]}/healthz", context=context, timeout=2) as r:
    sys.exit(0 if r.read() == b"ok" else 1)
PY
}

etcd_healthy() {
  python3 - "$ETCD_PORT" <<'PY'
import json, sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=2) as r:
    sys.exit(0 if json.loads(r.read()).get("health") == "true" else 1)
PY
}

nodes_yaml() {
  local i
  for i in $(seq 1 "$NODES"); do
    cat <<YAML
---
apiVersion: v1
kind: Node
metadata:
  name: node-$i
  labels: {kubernetes.io/hostname: node-$i, kubernetes.io/os: linux, type: kwok}
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
YAML
  done
}

start_apiserver() {
  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --service-cluster-ip-range "$SERVICE_CIDR" --allow-privileged=true \
    --authorization-mode RBAC --client-ca-file "$PKI/ca.crt" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" \
    --service-account-signing-key-file "$PKI/sa.key" \
    --cert-dir "$DIR/apiserver-certs" --profiling=false --v=1
  wait_until 120 kube-apiserver kubectl_ get --raw /readyz
}

up() {
  build
  pki
  kwok_config
  mkdir -p "$RUN" "$DIR/logs" "$DIR/etcd"
  start etcd "$BIN/etcd" --name knm-dev --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "knm-dev=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync=true --log-level=warn
  wait_until 60 etcd etcd_healthy
  start_apiserver
  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$KUBECONFIG_FILE" --authentication-kubeconfig "$KUBECONFIG_FILE" \
    --authorization-kubeconfig "$KUBECONFIG_FILE" \
    --bind-address 127.0.0.1 --secure-port "$CM_PORT" --leader-elect=false \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --service-cluster-ip-range "$SERVICE_CIDR" --profiling=false --v=1
  start kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig "$KUBECONFIG_FILE" --authentication-kubeconfig "$KUBECONFIG_FILE" \
    --authorization-kubeconfig "$KUBECONFIG_FILE" \
    --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" --leader-elect=false \
    --profiling=false --v=1
  start kwok "$BIN/kwok" --kubeconfig "$KUBECONFIG_FILE" --config "$DIR/kwok.yaml" \
    --manage-all-nodes=true --server-address "127.0.0.1:$KWOK_PORT" \
    --node-lease-duration-seconds 40
  wait_until 60 kube-controller-manager healthz "$CM_PORT"
  wait_until 60 kube-scheduler healthz "$SCHED_PORT"
  nodes_yaml | kubectl_ apply -f - >/dev/null
  # knm's default underlay (192.168.0.0/16), node-i at its i-th address, as the manifest
  # source places its simulated nodes; kwok keeps the addresses a node has.
  local i
  for i in $(seq 1 "$NODES"); do
    kubectl_ patch node "node-$i" --subresource=status --type=merge -p \
      "{\"status\":{\"addresses\":[{\"type\":\"InternalIP\",\"address\":\"192.168.$((i / 256)).$((i % 256))\"},{\"type\":\"Hostname\",\"address\":\"node-$i\"}]}}" >/dev/null
  done
  wait_until 120 kwok kubectl_ wait --for=condition=Ready node --all --timeout=5s
  # Pods are admitted only once the namespace's default service account exists.
  wait_until 60 kube-controller-manager kubectl_ -n default get serviceaccount default
  say "cluster up: kubeconfig $KUBECONFIG_FILE"
}

COMPONENTS=(kwok kube-scheduler kube-controller-manager kube-apiserver etcd)

stop() {  # stop NAME: SIGTERM, then SIGKILL after 15 s
  local name="$1"
  if pid_alive "$RUN/$name.pid"; then
    say "stopping $name"
    kill "$(cat "$RUN/$name.pid")"
    for _ in $(seq 60); do pid_alive "$RUN/$name.pid" || break; sleep 0.25; done
    if pid_alive "$RUN/$name.pid"; then kill -9 "$(cat "$RUN/$name.pid")"; fi
  fi
  rm -f "$RUN/$name.pid"
}

down() {
  local name
  for name in "${COMPONENTS[@]}"; do stop "$name"; done
}

# The apiserver alone, as when it is upgraded or crashes: every watch on it ends, and
# its watch cache starts again from etcd's current revision (older versions get 410).
restart_apiserver() {
  stop kube-apiserver
  start_apiserver
}

# Removes the cluster's state (etcd's data, certificates); the builds stay.
reset() {
  down
  rm -rf "$DIR/etcd" "$PKI" "$KUBECONFIG_FILE" "$DIR/apiserver-certs"
}

status() {
  local name stopped=0
  for name in "${COMPONENTS[@]}"; do
    if pid_alive "$RUN/$name.pid"; then
      echo "$name: running (pid $(cat "$RUN/$name.pid"), log $DIR/logs/$name.log)"
    else
      echo "$name: stopped"
      stopped=1
    fi
  done
  [ "$stopped" -eq 0 ] && echo "kubeconfig: $KUBECONFIG_FILE"
  [ "$stopped" -eq 0 ] || return 3
}

env_lines() {
  echo "export KNM_KUBECONFIG=$KUBECONFIG_FILE"
  echo "export KNM_KUBECTL=$BIN/kubectl"
}

case "${1:-}" in
  build) build ;;
  up) up ;;
  down) down ;;
  reset) reset ;;
  status) status ;;
  restart) down; up ;;
  restart-apiserver) restart_apiserver ;;
  env) env_lines ;;
  kubeconfig) echo "$KUBECONFIG_FILE" ;;
  *) echo "usage: $0 build|up|down|status|restart|restart-apiserver|reset|env|kubeconfig" >&2; exit 2 ;;
esac
