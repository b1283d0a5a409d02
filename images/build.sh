#!/usr/bin/env bash
# Build and push the two CloudML images with one tag:  images/build.sh REGISTRY TAG
#   REGISTRY/cloudml-cpu:TAG  (ingest, gate)            images/cpu.Dockerfile
#   REGISTRY/cloudml-gpu:TAG  (pretrain/finetune/eval)  images/gpu.Dockerfile
# The names match cloudml/cluster/settings.py (CPU_IMAGE_NAME, GPU_IMAGE_NAME); compile the pipeline
# with the same CLOUDML_REGISTRY / CLOUDML_TAG (`make images submit REGISTRY=... TAG=...`).
#
# Needs a Docker engine with buildx and a registry login. NOT RUNNABLE on the development
# machine this project was written on (no Docker engine there); the Dockerfiles are checked
# offline with hadolint (tests/test_images.py). Set PLATFORM to override linux/amd64.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 REGISTRY TAG   (e.g. $0 ghcr.io/cloudml 0.1.0)" >&2
    exit 2
fi
registry="${1%/}"
tag="$2"
platform="${PLATFORM:-linux/amd64}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if ! docker buildx version >/dev/null 2>&1; then
    echo "error: docker buildx not available (needs a Docker engine with the buildx plugin)" >&2
    exit 1
fi

for kind in cpu gpu; do
    image="${registry}/cloudml-${kind}:${tag}"
    echo "==> building and pushing ${image} (${platform})"
    docker buildx build \
        --file "${root}/images/${kind}.Dockerfile" \
        --platform "${platform}" \
        --label "org.opencontainers.image.version=${tag}" \
        --label "org.opencontainers.image.revision=$(git -C "${root}" rev-parse HEAD 2>/dev/null || echo unknown)" \
        --tag "${image}" \
        --push \
        "${root}"
    # the digest to pin in production overlays / to record in the model card
    docker buildx imagetools inspect "${image}" --format '{{json .Manifest.Digest}}' || true
done
echo "pushed ${registry}/cloudml-cpu:${tag} and ${registry}/cloudml-gpu:${tag}"
