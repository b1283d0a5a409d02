"""Loopback stand-in for the few Kubernetes API reads `cloudml preflight` makes.

A loopback server on 127.0.0.1 (free port; tests/support/loopback.py) serves recorded-shape
API JSON for one scenario: GET /version, /api/v1/nodes, /api/v1/namespaces/NS/{secrets,configmaps,services}/NAME;
anything else is a 404 Status object, as the real API server answers. `write_kubeconfig`
points a kube config at it so the real `kubernetes` client is exercised end to end.

    with K8sStandin(scenario("missing-taint")) as api:
        kubeconfig = write_kubeconfig(tmp_path / "config", api.url)
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import yaml

from cloudml.cluster import settings as platform
from tests.support.loopback import LoopbackServer, Request

SCENARIOS = ("healthy", "missing-taint", "missing-secret", "no-gpus")
MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def _node(
    name: str, labels: dict[str, str], taints: list[dict[str, str]], gpus: int | None
) -> dict[str, Any]:
    allocatable = {"cpu": "15500m", "memory": "126Gi", "pods": "110"}
    if gpus is not None:
        allocatable["nvidia.com/gpu"] = str(gpus)
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}},
        "spec": {"taints": taints} if taints else {},
        "status": {"allocatable": allocatable, "capacity": dict(allocatable)},
    }


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _base_configmap(name: str) -> dict[str, Any]:
    """A ConfigMap as the dev/gpu-cluster overlays define it, read from manifests/base."""
    cfg = MANIFESTS / "base" / "config"
    if name == platform.KFP_LAUNCHER_CONFIGMAP:
        data = {
            "defaultPipelineRoot": f"s3://{platform.MINIO_BUCKET}/pipeline-root",
            "providers": (cfg / "kfp-launcher-providers.yaml").read_text(),
        }
    else:
        lines = (cfg / "settings.env").read_text().splitlines()
        data = dict(ln.split("=", 1) for ln in lines if "=" in ln and not ln.startswith("#"))
    return {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": name}, "data": data}


def scenario(name: str, namespace: str = platform.NAMESPACE) -> dict[str, Any]:
    """REST path -> JSON body for one cluster state (see SCENARIOS)."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; one of {SCENARIOS}")
    pool = platform.GpuPool()
    label = {pool.label_key: pool.label_value}
    taint = [{"key": pool.taint_key, "value": pool.taint_value, "effect": pool.taint_effect}]
    nodes = [
        _node("cpu-1", {"cloudml.io/node-pool": "cpu"}, [], None),
        _node(
            "gpu-1", label, [] if name == "missing-taint" else taint, 0 if name == "no-gpus" else 1
        ),
        _node("gpu-2", label, taint, 0 if name == "no-gpus" else 2),
    ]
    ns = f"/api/v1/namespaces/{namespace}"
    # an overlay re-targeted to another namespace names its MinIO there (docs/deploy.md)
    launcher = _base_configmap(platform.KFP_LAUNCHER_CONFIGMAP)
    launcher["data"]["providers"] = launcher["data"]["providers"].replace(
        f"{platform.MINIO_SERVICE}.{platform.NAMESPACE}.svc",
        f"{platform.MINIO_SERVICE}.{namespace}.svc",
    )
    routes: dict[str, Any] = {
        "/version": {"major": "1", "minor": "30", "gitVersion": "v1.30.4"},
        "/api/v1/nodes": {"kind": "NodeList", "apiVersion": "v1", "items": nodes},
        f"{ns}/configmaps/{platform.KFP_LAUNCHER_CONFIGMAP}": launcher,
        f"{ns}/configmaps/{platform.SETTINGS_CONFIGMAP}": _base_configmap(
            platform.SETTINGS_CONFIGMAP
        ),
    }
    if name != "missing-secret":
        routes[f"{ns}/secrets/{platform.MINIO_SECRET_NAME}"] = {
            "kind": "Secret",
            "apiVersion": "v1",
            "metadata": {"name": platform.MINIO_SECRET_NAME},
            "type": "Opaque",
            "data": {k: _b64(f"standin-{k}") for k in platform.MINIO_SECRET_ENV},
        }
    for svc, port in (
        (platform.MINIO_SERVICE, platform.MINIO_PORT),
        (platform.PUSHGATEWAY_SERVICE, platform.PUSHGATEWAY_PORT),
    ):
        routes[f"{ns}/services/{svc}"] = {
            "kind": "Service",
            "apiVersion": "v1",
            "metadata": {"name": svc},
            "spec": {"ports": [{"name": "http", "port": port, "protocol": "TCP"}]},
        }
    return routes


class K8sStandin(LoopbackServer):
    """Serve `routes` (GET only) on 127.0.0.1:<free port>; records request paths."""

    def __init__(self, routes: dict[str, Any]) -> None:
        super().__init__()
        self.routes = copy.deepcopy(routes)
        self.requests: list[str] = []

    def respond(self, request: Request) -> tuple[int, Any]:
        """The route's JSON body, or a 404 Status object as the real API server answers."""
        path = request.path.split("?", 1)[0]
        self.requests.append(path)
        body = self.routes.get(path)
        if body is None:
            return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "message": f"{path} not found", "reason": "NotFound", "code": 404}  # fmt: skip
        return 200, body


def write_kubeconfig(path: Path, server: str, namespace: str = platform.NAMESPACE) -> Path:
    """A kube config with one context pointing at `server` (plain HTTP, bearer token)."""
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "standin", "cluster": {"server": server}}],
        "users": [{"name": "standin", "user": {"token": "standin-token"}}],
        "contexts": [
            {
                "name": "standin",
                "context": {"cluster": "standin", "user": "standin", "namespace": namespace},
            }
        ],
        "current-context": "standin",
    }
    path.write_text(yaml.safe_dump(cfg))
    return path
