"""`cloudml preflight`: is the cluster in the kube config ready for `make submit`?

Checks, each a pure function over Kubernetes API objects (plain dicts as the API returns
them): the GPU pool (nodes with the pool's label, its taint, allocatable nvidia.com/gpu),
the MinIO credentials Secret, the kfp-launcher and cloudml-settings ConfigMaps and the
MinIO / Pushgateway Services in the run namespace, and that the pool the pipeline will be
compiled for (cloudml.cluster.settings.gpu_pool) is the one the cluster's settings name. One
PASS/FAIL line per check with the fix; exit 1 if any fails. The API calls are a thin layer
(`ClusterReader`) over the `kubernetes` client.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cloudml.cluster import settings as platform
from cloudml.cluster.manifests.platform_names import launcher_problems
from cloudml.errors import CloudMLError

log = logging.getLogger(__name__)
GPU_RESOURCE = "nvidia.com/gpu"
SETTINGS_KEYS = ("MINIO_ENDPOINT", "MINIO_SECURE", "CLOUDML_STORE", "PUSHGATEWAY_URL")
APPLY_HINT = "kubectl apply -k manifests/overlays/<overlay> (docs/deploy.md)"


class PreflightError(CloudMLError):
    """The Kubernetes API could not be reached or read (kubeconfig, endpoint, RBAC)."""


@dataclass(frozen=True)
class Check:
    """One preflight result; `fix` says what to run when it fails."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        head = f"{'PASS' if self.ok else 'FAIL'}  {self.name}: {self.detail}"
        return head if self.ok or not self.fix else f"{head}\n      fix: {self.fix}"


# --- pure checks -------------------------------------------------------------------------


def _name(obj: dict[str, Any]) -> str:
    return obj.get("metadata", {}).get("name", "?")


def _gpu_count(node: dict[str, Any]) -> int:
    raw = (node.get("status", {}).get("allocatable") or {}).get(GPU_RESOURCE, "0")
    try:
        return int(raw)
    except ValueError:
        return 0


def _has_taint(node: dict[str, Any], pool: platform.GpuPool) -> bool:
    return any(
        t.get("key") == pool.taint_key
        and t.get("value", "") == pool.taint_value
        and t.get("effect") == pool.taint_effect
        for t in node.get("spec", {}).get("taints") or []
    )


def check_gpu_nodes(
    nodes: list[dict[str, Any]], pool: platform.GpuPool, taint_required: bool = True
) -> list[Check]:
    """Label, taint and allocatable GPUs of the pool's nodes (three checks)."""
    label = f"{pool.label_key}={pool.label_value}"
    taint = f"{pool.taint_key}={pool.taint_value}:{pool.taint_effect}"
    pool_nodes = [
        n
        for n in nodes
        if (n.get("metadata", {}).get("labels") or {}).get(pool.label_key) == pool.label_value
    ]
    names = ", ".join(_name(n) for n in pool_nodes)
    if not pool_nodes:
        seen = ", ".join(_name(n) for n in nodes) or "none"
        fail = "no pool nodes to check"
        return [
            Check("GPU pool label", False, f"no node has label {label} (nodes: {seen})",
                  f"kubectl label nodes <gpu-node> {label}"),
            Check("GPU pool taint", False, fail, f"kubectl taint nodes <gpu-node> {taint}"),
            Check("GPU allocatable", False, fail, "label the GPU nodes first"),
        ]  # fmt: skip
    checks = [Check("GPU pool label", True, f"{len(pool_nodes)} node(s) with {label}: {names}")]
    untainted = [_name(n) for n in pool_nodes if not _has_taint(n, pool)]
    if not taint_required:
        checks.append(
            Check(
                "GPU pool taint", True, "not required (cloudml-settings CLOUDML_GPU_TAINT is empty)"
            )
        )
    elif untainted:
        checks.append(
            Check("GPU pool taint", False, f"node(s) {', '.join(untainted)} lack taint {taint}",
                  f"kubectl taint nodes {' '.join(untainted)} {taint}")
        )  # fmt: skip
    else:
        checks.append(Check("GPU pool taint", True, f"every pool node has {taint}"))
    counts = {_name(n): _gpu_count(n) for n in pool_nodes}
    usable = {k: v for k, v in counts.items() if v >= pool.gpus_per_task}
    if usable:
        checks.append(
            Check(
                "GPU allocatable",
                True,
                f"{sum(usable.values())} {GPU_RESOURCE} on {len(usable)} node(s)",
            )
        )
    else:
        checks.append(
            Check("GPU allocatable", False,
                  f"pool nodes report allocatable {GPU_RESOURCE} {counts}, need >= {pool.gpus_per_task}",
                  "install the NVIDIA GPU Operator or device plugin on the pool; check "
                  "`kubectl describe node <gpu-node>` for nvidia.com/gpu")
        )  # fmt: skip
    return checks


def check_secret(secret: dict[str, Any] | None, namespace: str) -> Check:
    """The MinIO credentials Secret exists with both keys, non-empty."""
    name = f"Secret {namespace}/{platform.MINIO_SECRET_NAME}"
    fix = (
        "create manifests/overlays/gpu-cluster/minio-credentials.env from its .example, then "
        + APPLY_HINT
    )
    if secret is None:
        return Check("MinIO credentials", False, f"{name} not found", fix)
    data = secret.get("data") or {}
    empty = sorted(k for k in platform.MINIO_SECRET_ENV if not data.get(k))
    if empty:
        return Check("MinIO credentials", False, f"{name} lacks non-empty key(s) {empty}", fix)
    return Check("MinIO credentials", True, f"{name} has {sorted(platform.MINIO_SECRET_ENV)}")


def check_launcher(cm: dict[str, Any] | None, namespace: str) -> Check:
    """kfp-launcher sends artifacts to our MinIO with our Secret (same rule as the manifests)."""
    name = f"ConfigMap {namespace}/{platform.KFP_LAUNCHER_CONFIGMAP}"
    if cm is None:
        return Check("KFP launcher config", False, f"{name} not found", APPLY_HINT)
    problems = launcher_problems(cm, namespace)
    if problems:
        return Check("KFP launcher config", False, "; ".join(problems), APPLY_HINT)
    return Check(
        "KFP launcher config", True, f"{name}: pipeline root {cm['data']['defaultPipelineRoot']}"
    )


def check_settings(cm: dict[str, Any] | None, namespace: str) -> Check:
    name = f"ConfigMap {namespace}/{platform.SETTINGS_CONFIGMAP}"
    if cm is None:
        return Check("cloudml settings", False, f"{name} not found", APPLY_HINT)
    missing = [k for k in SETTINGS_KEYS if k not in (cm.get("data") or {})]
    if missing:
        return Check("cloudml settings", False, f"{name} lacks {missing}", APPLY_HINT)
    return Check("cloudml settings", True, f"{name} has {', '.join(SETTINGS_KEYS)}")


def check_pool_agreement(settings: dict[str, Any] | None, pool: platform.GpuPool) -> Check:
    """The pool this machine compiles for (env / platform) is the one the cluster declares."""
    data = (settings or {}).get("data") or {}
    want_label = f"{pool.label_key}={pool.label_value}"
    want_taint = f"{pool.taint_key}={pool.taint_value}:{pool.taint_effect}"
    label, taint = data.get("CLOUDML_GPU_NODE_LABEL"), data.get("CLOUDML_GPU_TAINT")
    fix = "set CLOUDML_GPU_NODE_LABEL / CLOUDML_GPU_TAINT before `make submit`, or fix the overlay"
    if label is not None and label != want_label:
        return Check(
            "GPU pool agreement",
            False,
            f"cluster pool label {label}, pipeline compiles {want_label}",
            fix,
        )
    if taint and taint != want_taint:
        return Check(
            "GPU pool agreement",
            False,
            f"cluster pool taint {taint}, pipeline tolerates {want_taint}",
            fix,
        )
    return Check(
        "GPU pool agreement", True, f"pipeline targets {want_label}, tolerates {want_taint}"
    )


def check_service(svc: dict[str, Any] | None, namespace: str, name: str, port: int) -> Check:
    what = f"Service {namespace}/{name}"
    if svc is None:
        return Check(f"{name} Service", False, f"{what} not found", APPLY_HINT)
    ports = [p.get("port") for p in svc.get("spec", {}).get("ports") or []]
    if port not in ports:
        return Check(
            f"{name} Service", False, f"{what} exposes {ports}, expected {port}", APPLY_HINT
        )
    return Check(f"{name} Service", True, f"{what}:{port}")


def run_checks(read: Callable[[str], Any], namespace: str, pool: platform.GpuPool) -> list[Check]:
    """All checks. `read(path)` returns the API object at a REST path, or None on 404."""
    version = read("/version") or {}
    checks = [Check("API server", True, f"Kubernetes {version.get('gitVersion', '?')}")]
    settings = read(f"/api/v1/namespaces/{namespace}/configmaps/{platform.SETTINGS_CONFIGMAP}")
    taint_required = (settings or {}).get("data", {}).get("CLOUDML_GPU_TAINT") != ""
    nodes = (read("/api/v1/nodes") or {}).get("items") or []
    checks += check_gpu_nodes(nodes, pool, taint_required)
    checks.append(check_pool_agreement(settings, pool))
    checks.append(
        check_secret(
            read(f"/api/v1/namespaces/{namespace}/secrets/{platform.MINIO_SECRET_NAME}"), namespace
        )
    )
    checks.append(
        check_launcher(
            read(f"/api/v1/namespaces/{namespace}/configmaps/{platform.KFP_LAUNCHER_CONFIGMAP}"),
            namespace,
        )
    )
    checks.append(check_settings(settings, namespace))
    for name, port in (
        (platform.MINIO_SERVICE, platform.MINIO_PORT),
        (platform.PUSHGATEWAY_SERVICE, platform.PUSHGATEWAY_PORT),
    ):
        checks.append(
            check_service(
                read(f"/api/v1/namespaces/{namespace}/services/{name}"), namespace, name, port
            )
        )
    return checks


# --- thin I/O ---------------------------------------------------------------------------


class ClusterReader:
    """GET raw API JSON through the `kubernetes` client (kubeconfig, else in-cluster)."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None) -> None:
        from kubernetes import client, config

        self._client = client
        try:
            self.api = config.new_client_from_config(config_file=kubeconfig, context=context)
        except (config.ConfigException, OSError) as e:
            if kubeconfig or "KUBERNETES_SERVICE_HOST" not in os.environ:
                raise PreflightError(
                    f"kube config {kubeconfig or '$KUBECONFIG or ~/.kube/config'}: {e}"
                ) from e
            config.load_incluster_config()  # running inside a pod: use its ServiceAccount
            self.api = client.ApiClient()
        self.host = self.api.configuration.host

    def __call__(self, path: str) -> Any:
        try:
            resp = self.api.call_api(
                path, "GET", header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"], _preload_content=False, _request_timeout=15,
            )  # fmt: skip
        except self._client.ApiException as e:
            if e.status == 404:
                return None
            raise PreflightError(f"GET {self.host}{path}: HTTP {e.status} {e.reason}") from e
        except Exception as e:  # urllib3 connection errors carry no common base worth naming
            raise PreflightError(f"GET {self.host}{path}: cannot reach the API server: {e}") from e
        return json.loads(resp[0].data)


def preflight(
    namespace: str = platform.NAMESPACE, kubeconfig: str | None = None, context: str | None = None
) -> int:
    """Print one line per check; 0 when all pass, 1 otherwise."""
    reader = ClusterReader(kubeconfig, context)
    log.info("preflight against %s, namespace %s", reader.host, namespace)
    checks = run_checks(reader, namespace, platform.gpu_pool())
    for c in checks:
        print(c.line())
    failed = [c.name for c in checks if not c.ok]
    print(
        f"{len(checks) - len(failed)} passed, {len(failed)} failed"
        + (f": {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preflight", help="check the cluster is ready for `make submit`")
    p.add_argument(
        "--namespace", default=platform.NAMESPACE, help="run namespace (default %(default)s)"
    )
    p.add_argument(
        "--kubeconfig",
        default=None,
        help="kube config file (default: $KUBECONFIG or ~/.kube/config)",
    )
    p.add_argument("--context", default=None, help="kube config context (default: current)")
    p.set_defaults(func=lambda a: preflight(a.namespace, a.kubeconfig, a.context))
