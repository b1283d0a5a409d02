#!/usr/bin/env bash
# A local Debian bookworm base image without a container registry:
#   images/base.sh [NAME]        (default localhost/cloudml-base:bookworm)
# mmdebstrap builds a minimal root filesystem from the Debian package registry and
# `podman import` turns it into an image. Reused when NAME exists (delete it to refresh:
# podman rmi NAME). Python 3.11 is bookworm's python3, the same minor version as the venv.
set -euo pipefail
name="${1:-localhost/cloudml-base:bookworm}"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/podman/containers.conf}"
if podman image exists "${name}"; then
    echo "base image ${name} exists (reused)"
    exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT
echo "==> mmdebstrap bookworm -> ${name}"
# ca-certificates: pip in the build verifies TLS; the Dockerfile's apt-get finds the rest
mmdebstrap --quiet --variant=minbase --include=ca-certificates,python3,python3-venv,libjemalloc2 \
    bookworm "${tmp}/rootfs.tar" http://deb.debian.org/debian
podman import --quiet \
    --change 'CMD ["/bin/bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "${tmp}/rootfs.tar" "${name}" >/dev/null
echo "base image ${name}: $(podman image inspect --format '{{.Id}}' "${name}" | cut -c1-12)"
