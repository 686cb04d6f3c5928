# Shared by knm's development-service scripts. Sourced, not run.
# Everything lives under KNM_DEV_HOME, outside the repository, so that a server started
# by one checkout serves every checkout and test run on the machine.
KNM_DEV_HOME="${KNM_DEV_HOME:-/var/tmp/knm-dev-$(id -u)}"
mkdir -p "$KNM_DEV_HOME"

say() { printf 'knm-dev: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  say "installing $* from Debian's packages"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
