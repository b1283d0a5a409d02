"""Cluster-facing names shared by the pipeline compiler, the manifests and preflight.

One place for every name that must agree between the compiled pipeline (`pipelines/`),
the Kubernetes manifests (`manifests/`) and `cloudml preflight`. Tests assert that the
three agree, so change a value here and in `manifests/` together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cloudml import __version__

# --- images -----------------------------------------------------------------------------
# Two images built from images/ with one tag: the CUDA image for training and evaluation,
# a slim CPU image for ingest and the gate (the CPU pool should not pull a multi-GB CUDA
# base). `make images REGISTRY=... TAG=...` builds both; the pipeline compiles against the
# same REGISTRY/TAG read from the environment here.
DEFAULT_REGISTRY = "ghcr.io/cloudml"
CPU_IMAGE_NAME = "cloudml-cpu"
GPU_IMAGE_NAME = "cloudml-gpu"


def image_tag() -> str:
    """The tag every component runs: $CLOUDML_TAG, else the package version."""
    return os.environ.get("CLOUDML_TAG") or __version__


def registry() -> str:
    return (os.environ.get("CLOUDML_REGISTRY") or DEFAULT_REGISTRY).rstrip("/")


def cpu_image() -> str:
    return f"{registry()}/{CPU_IMAGE_NAME}:{image_tag()}"


def gpu_image() -> str:
    return f"{registry()}/{GPU_IMAGE_NAME}:{image_tag()}"


# --- namespaces and in-cluster services --------------------------------------------------
# Runs execute in a Kubeflow profile namespace that also hosts MinIO and the Pushgateway.
NAMESPACE = "cloudml"
MINIO_SERVICE = "minio"
MINIO_PORT = 9000
MINIO_BUCKET = "cloudml"
PUSHGATEWAY_SERVICE = "pushgateway"
PUSHGATEWAY_PORT = 9091

# Secret holding the MinIO credentials; mounted as env into every task and named by the
# kfp-launcher ConfigMap's providers block. Keys inside the Secret -> env variable names.
MINIO_SECRET_NAME = "cloudml-minio-credentials"
MINIO_SECRET_ENV = {"accesskey": "MINIO_ACCESS_KEY", "secretkey": "MINIO_SECRET_KEY"}
# ConfigMap with the non-secret settings (MINIO_ENDPOINT, CLOUDML_STORE, PUSHGATEWAY_URL, ...)
SETTINGS_CONFIGMAP = "cloudml-settings"
KFP_LAUNCHER_CONFIGMAP = "kfp-launcher"
SERVICE_ACCOUNT = "cloudml-pipeline-runner"


# --- GPU node pool -----------------------------------------------------------------------
@dataclass(frozen=True)
class GpuPool:
    """Where training/evaluation pods go: node selector label plus the pool's taint."""

    label_key: str = "cloudml.io/node-pool"
    label_value: str = "gpu"
    taint_key: str = "nvidia.com/gpu"
    taint_value: str = "present"
    taint_effect: str = "NoSchedule"
    gpus_per_task: int = 1


def gpu_pool() -> GpuPool:
    """The GPU pool, overridable at compile time.

    CLOUDML_GPU_NODE_LABEL=key=value and CLOUDML_GPU_TAINT=key=value:Effect.
    """
    pool = GpuPool()
    label = os.environ.get("CLOUDML_GPU_NODE_LABEL")
    if label:
        key, sep, value = label.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"CLOUDML_GPU_NODE_LABEL must be key=value, got {label!r}")
        pool = GpuPool(key, value, pool.taint_key, pool.taint_value, pool.taint_effect)
    taint = os.environ.get("CLOUDML_GPU_TAINT")
    if taint:
        kv, sep, effect = taint.partition(":")
        key, sep2, value = kv.partition("=")
        if (
            not sep
            or not sep2
            or not key
            or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute")
        ):
            raise ValueError(f"CLOUDML_GPU_TAINT must be key=value:Effect, got {taint!r}")
        pool = GpuPool(pool.label_key, pool.label_value, key, value, effect)
    return pool


def gpu_parallelism() -> int:
    """How many members of an ensemble train at once on the GPU pool (ParallelFor's
    parallelism, fixed at compile time): CLOUDML_GPU_PARALLELISM, default 4."""
    raw = os.environ.get("CLOUDML_GPU_PARALLELISM", "4")
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"CLOUDML_GPU_PARALLELISM must be a positive integer, got {raw!r}")
    return int(raw)
