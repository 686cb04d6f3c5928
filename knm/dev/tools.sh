#!/usr/bin/env bash
# The kernel-side tools knm's dataplane, lab and tests use: nftables (and the library its
# JSON interface runs on), iperf3, Debian's reference CNI plugins, and the reference
# `cnitool` built from its Go module. Idempotent: installs only what is missing.
#   tools.sh up|status|env
set -euo pipefail
. "$(dirname "$0")/common.sh"

CNITOOL_VERSION="${KNM_CNITOOL_VERSION:-v1.3.0}"
BIN="$KNM_DEV_HOME/bin"
PACKAGES=(nftables libnftables1 iperf3 containernetworking-plugins)

missing_packages() {
  local p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || printf '%s ' "$p"
  done
}

go_bin() { command -v go || { [ -x /usr/local/go/bin/go ] && echo /usr/local/go/bin/go; } || true; }

up() {
  local missing
  missing="$(missing_packages)"
  # shellcheck disable=SC2086  # a list of package names
  [ -z "$missing" ] || apt_install $missing
  if [ ! -x "$BIN/cnitool" ]; then
    local go
    go="$(go_bin)"
    [ -n "$go" ] || { say "Go is needed to build cnitool"; exit 1; }
    say "building cnitool $CNITOOL_VERSION from its Go module"
    mkdir -p "$BIN"
    GOBIN="$BIN" "$go" install "github.com/containernetworking/cni/cnitool@$CNITOOL_VERSION" >&2
  fi
}

status() {
  local missing
  missing="$(missing_packages)"
  [ -z "$missing" ] && say "packages: installed" || say "packages missing: $missing"
  [ -x "$BIN/cnitool" ] && say "cnitool: $BIN/cnitool" || say "cnitool: not built"
}

env_lines() {
  echo "export KNM_CNITOOL=$BIN/cnitool"
  echo "export KNM_CNI_PLUGINS=/usr/lib/cni"
}

case "${1:-}" in
  up) up ;;
  down) ;;  # installs stay: nothing runs
  restart) up ;;
  status) status ;;
  env) env_lines ;;
  *) echo "usage: $0 up|down|restart|status|env" >&2; exit 2 ;;
esac
