#!/usr/bin/env bash
# Build the CloudML images from images/Dockerfile (one target per kind):
#   images/build.sh REGISTRY TAG [KIND...]   build and push REGISTRY/cloudml-{cpu,gpu}:TAG
#   images/build.sh --local TAG [KIND...]    build localhost/cloudml-{cpu,gpu}:TAG here, no
#                                            registry: the bookworm base of images/base.sh and
#                                            the torch wheel in TORCH_WHEELS; not pushed
# KIND is cpu and/or gpu (default both). The names match cloudml/cluster/settings.py
# (CPU_IMAGE_NAME, GPU_IMAGE_NAME); compile with the same CLOUDML_REGISTRY / CLOUDML_TAG.
#
# Engine: `docker buildx` where it works, else `podman build` (ENGINE=docker|podman forces
# one). Build arguments, from the environment:
#   CPU_BASE, GPU_BASE                base images (defaults: the Dockerfile's and the CUDA one
#                                     below; --local: the local bookworm image for both)
#   CPU_TORCH_INDEX, GPU_TORCH_INDEX  where torch comes from (CPU / CUDA wheel index)
#   TORCH_WHEELS                      a directory holding torch-<version>+cpu-*.whl; when set
#                                     the CPU torch is that wheel and no index is asked
#   HOST_CA                           CA bundle pip must trust in the build (podman: mounted
#                                     read-only at /run/cloudml-host-ca.crt; default PIP_CERT)
#   PLATFORM                          default linux/amd64
# Each image is labelled with a hash of everything it is built from (org.cloudml.inputs): an
# image whose label matches is reused, not rebuilt. Prints each image's digest and size.
set -euo pipefail

usage() {
    echo "usage: $0 REGISTRY TAG [cpu|gpu ...]   or   $0 --local TAG [cpu|gpu ...]" >&2
    exit 2
}
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
local_build=0
if [[ "${1:-}" == "--local" ]]; then
    local_build=1
    shift
    [[ $# -ge 1 ]] || usage
    registry="localhost"
    tag="$1"
    shift
else
    [[ $# -ge 2 ]] || usage
    registry="${1%/}"
    tag="$2"
    shift 2
fi
kinds=("$@")
[[ ${#kinds[@]} -gt 0 ]] || kinds=(cpu gpu)
for kind in "${kinds[@]}"; do
    [[ "${kind}" == cpu || "${kind}" == gpu ]] || { echo "error: unknown image kind '${kind}' (cpu or gpu)" >&2; exit 2; }
done
platform="${PLATFORM:-linux/amd64}"
torch_version="$(sed -n 's/^ARG TORCH_VERSION=//p' "${root}/images/Dockerfile")"

# --- engine ----------------------------------------------------------------------------------
engine="${ENGINE:-}"
if [[ -z "${engine}" ]]; then
    if docker buildx version >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        engine=docker
    elif command -v podman >/dev/null; then
        engine=podman
    else
        echo "error: neither docker buildx (with a running engine) nor podman found" \
            "(images/install-tools.sh installs podman on Debian)" >&2
        exit 1
    fi
fi
if [[ "${engine}" == podman ]]; then
    export CONTAINERS_CONF="${CONTAINERS_CONF:-${root}/images/podman/containers.conf}"
fi

# --- build arguments -------------------------------------------------------------------------
cpu_base="${CPU_BASE:-$(sed -n 's/^ARG BASE_IMAGE=//p' "${root}/images/Dockerfile")}"
gpu_base="${GPU_BASE:-nvidia/cuda:13.0.1-base-ubuntu24.04}"
cpu_index="${CPU_TORCH_INDEX-https://download.pytorch.org/whl/cpu}"
gpu_index="${GPU_TORCH_INDEX-https://download.pytorch.org/whl/cu130}"
if [[ ${local_build} -eq 1 ]]; then
    cpu_base="${CPU_BASE:-localhost/cloudml-base:bookworm}"
    # no CUDA base or wheel can be fetched here: the gpu target is built from the CPU ones
    gpu_base="${GPU_BASE:-${cpu_base}}"
    gpu_index="${GPU_TORCH_INDEX-${cpu_index}}"
    if [[ -z "${CPU_BASE:-}" ]]; then
        ENGINE="${engine}" bash "${root}/images/base.sh" "${cpu_base}"
    fi
fi
wheels="$(mktemp -d)"  # the build context torch-wheels: empty unless a local wheel is used
trap 'rm -rf "${wheels}"' EXIT
if [[ -n "${TORCH_WHEELS:-}" ]]; then
    wheel="$(find "${TORCH_WHEELS}" -maxdepth 1 -name "torch-${torch_version}+cpu-*.whl" | sort | head -n1)"
    if [[ -z "${wheel}" ]]; then
        echo "error: TORCH_WHEELS=${TORCH_WHEELS}: no torch-${torch_version}+cpu-*.whl there" >&2
        exit 1
    fi
    ln "${wheel}" "${wheels}/" 2>/dev/null || cp "${wheel}" "${wheels}/"
    cpu_index=""
    [[ ${local_build} -eq 1 && -z "${GPU_TORCH_INDEX+x}" ]] && gpu_index=""
fi

# --- the hash of the inputs: Dockerfile, pins, sources, build arguments, base, wheel ----------
inputs_hash() {  # KIND BASE INDEX
    local base_id
    base_id="$("${engine}" image inspect --format '{{.Id}}' "$2" 2>/dev/null || echo "$2")"
    {
        echo "kind=$1 base=$2 base_id=${base_id} index=$3 platform=${platform}"
        (cd "${root}" && find images/Dockerfile images/constraints.txt pyproject.toml README.md \
            cloudml components pipelines -type f ! -name '*.pyc' ! -path '*/__pycache__/*' \
            -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
        (cd "${wheels}" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
    } | sha256sum | cut -c1-64
}

revision="$(git -C "${root}" rev-parse HEAD 2>/dev/null || echo unknown)"
for kind in "${kinds[@]}"; do
    image="${registry}/cloudml-${kind}:${tag}"
    if [[ "${kind}" == cpu ]]; then base="${cpu_base}" index="${cpu_index}"; else base="${gpu_base}" index="${gpu_index}"; fi
    hash="$(inputs_hash "${kind}" "${base}" "${index}")"
    have="$("${engine}" image inspect --format '{{index .Config.Labels "org.cloudml.inputs"}}' "${image}" 2>/dev/null || true)"
    if [[ "${have}" == "${hash}" && ${local_build} -eq 1 ]]; then
        echo "==> ${image}: up to date (inputs ${hash:0:12}), reused"
    else
        echo "==> building ${image} (${engine}, base ${base}, torch from ${index:-the local wheel})"
        args=(
            --file "${root}/images/Dockerfile" --target "${kind}" --platform "${platform}"
            --build-arg "BASE_IMAGE=${base}" --build-arg "TORCH_INDEX=${index}"
            --build-context "torch-wheels=${wheels}"
            --label "org.opencontainers.image.version=${tag}"
            --label "org.opencontainers.image.revision=${revision}"
            --label "org.cloudml.inputs=${hash}"
            --tag "${image}"
        )
        if [[ "${kind}" == gpu && ${local_build} -eq 1 ]]; then
            args+=(--build-arg EXPECT_CUDA=0)  # the gpu target on the CPU base and wheel
        fi
        if [[ "${engine}" == docker ]]; then
            if [[ ${local_build} -eq 1 ]]; then args+=(--load); else args+=(--push); fi
            docker buildx build "${args[@]}" "${root}"
        else
            ca="${HOST_CA:-${PIP_CERT:-}}"
            if [[ -n "${ca}" && -f "${ca}" ]]; then
                # not over the image's own bundle: ca-certificates then fails to install
                args+=(--volume "${ca}:/run/cloudml-host-ca.crt:ro" --build-arg PIP_CERT=/run/cloudml-host-ca.crt)
            fi
            old_id="$(podman image inspect --format '{{.Id}}' "${image}" 2>/dev/null || true)"
            podman build --network host --layers "${args[@]}" "${root}"
            [[ ${local_build} -eq 1 ]] || podman push "${image}"
            # the image this one replaced: its copy of the venv is 1.5 GB nothing else uses
            # (the build stage's cached layers stay: they are what makes a rebuild fast)
            if [[ -n "${old_id}" && "${old_id}" != "$(podman image inspect --format '{{.Id}}' "${image}")" ]]; then
                podman rmi "${old_id}" >/dev/null 2>&1 || true
            fi
        fi
    fi
    if [[ "${engine}" == docker && ${local_build} -eq 0 ]]; then
        docker buildx imagetools inspect "${image}" --format '{{json .Manifest.Digest}}' || true
    else
        "${engine}" image inspect --format "${image} digest {{.Digest}} id {{.Id}} size {{.Size}} bytes" "${image}"
    fi
done
