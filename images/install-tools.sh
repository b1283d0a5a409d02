#!/usr/bin/env bash
# Debian packages the local image build needs, installed when we are root and they are
# missing (as scripts/install-system-deps.sh does for the test servers): podman (with
# buildah inside) to build and run OCI images without a Docker engine, runc (podman's
# default crun refuses this machine's hybrid cgroup layout; docs/deploy.md) and mmdebstrap
# (the bookworm base image, no container registry needed). Without root: say what is
# missing and exit 1, the build cannot go on.
set -euo pipefail
need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "error: not root or no apt-get; install these Debian packages first: ${need[*]}" >&2
    exit 1
fi
echo "installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" uidmap slirp4netns >/dev/null
