"""The rendered overlay agrees with cloudml/cluster/settings.py: namespace, ServiceAccount,
Secret keys, Services and ports, the cloudml-settings and kfp-launcher ConfigMaps, the
Pushgateway's ServiceMonitor."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import yaml

from cloudml.cluster import settings as platform
from cloudml.cluster.manifests.objects import find, ref


def _host_port(endpoint: str) -> tuple[str, int | None]:
    """'minio.ns.svc:9000' or 'http://pushgateway.ns.svc:9091' -> (host, port)."""
    parsed = urlparse(endpoint if "://" in endpoint else f"//{endpoint}")
    return parsed.hostname or "", parsed.port


def _points_at(endpoint: str, service: str, port: int, namespace: str = platform.NAMESPACE) -> bool:
    """host:port names `service` in `namespace` (short name, or service.namespace[.svc...])."""
    host, p = _host_port(endpoint)
    return (
        p == port
        and host.split(".")[0] == service
        and ("." not in host or host.split(".")[1] == namespace)
    )


def platform_problems(docs: list[dict[str, Any]]) -> list[str]:
    """Names in the rendered overlay that disagree with cloudml/cluster/settings.py."""
    p = platform
    problems: list[str] = []
    ns = find(docs, "Namespace", p.NAMESPACE)
    if ns is None:
        problems.append(f"Namespace {p.NAMESPACE} (platform.NAMESPACE) not rendered")
    for d in docs:
        meta = d.get("metadata", {})
        if d.get("kind") != "Namespace" and meta.get("namespace") != p.NAMESPACE:
            problems.append(
                f"{ref(d)} is in namespace {meta.get('namespace')!r}, not {p.NAMESPACE}"
            )

    if find(docs, "ServiceAccount", p.SERVICE_ACCOUNT) is None:
        problems.append(f"ServiceAccount {p.SERVICE_ACCOUNT} (platform.SERVICE_ACCOUNT) missing")
    bound = {
        s.get("name")
        for d in docs
        if d.get("kind") == "RoleBinding"
        for s in d.get("subjects") or []
        if s.get("kind") == "ServiceAccount"
    }
    if p.SERVICE_ACCOUNT not in bound:
        problems.append(f"no RoleBinding binds ServiceAccount {p.SERVICE_ACCOUNT}")

    secret = find(docs, "Secret", p.MINIO_SECRET_NAME)
    if secret is None:
        problems.append(f"Secret {p.MINIO_SECRET_NAME} (platform.MINIO_SECRET_NAME) not generated")
    else:
        keys = set(secret.get("data") or {}) | set(secret.get("stringData") or {})
        if keys != set(p.MINIO_SECRET_ENV):
            problems.append(
                f"Secret {p.MINIO_SECRET_NAME} keys {sorted(keys)}, "
                f"expected {sorted(p.MINIO_SECRET_ENV)} (platform.MINIO_SECRET_ENV)"
            )

    for name, port in (
        (p.MINIO_SERVICE, p.MINIO_PORT),
        (p.PUSHGATEWAY_SERVICE, p.PUSHGATEWAY_PORT),
    ):
        svc = find(docs, "Service", name)
        ports = [x.get("port") for x in (svc or {}).get("spec", {}).get("ports") or []]
        if port not in ports:
            problems.append(f"Service {name} with port {port} missing (has {ports})")

    problems += settings_problems(find(docs, "ConfigMap", p.SETTINGS_CONFIGMAP))
    problems += launcher_problems(find(docs, "ConfigMap", p.KFP_LAUNCHER_CONFIGMAP))
    return problems


def settings_problems(cm: dict[str, Any] | None) -> list[str]:
    """The cloudml-settings ConfigMap must hold the keys tasks read, pointing at our MinIO,
    Pushgateway and bucket, and (when set) the GPU pool's label and taint."""
    p = platform
    problems: list[str] = []
    settings = (cm or {}).get("data")
    if settings is None:
        problems.append(f"ConfigMap {p.SETTINGS_CONFIGMAP} (platform.SETTINGS_CONFIGMAP) missing")
        settings = {}
    for key in ("MINIO_ENDPOINT", "MINIO_SECURE", "CLOUDML_STORE", "PUSHGATEWAY_URL"):
        if key not in settings:
            problems.append(f"ConfigMap {p.SETTINGS_CONFIGMAP} lacks key {key}")
    if "MINIO_ENDPOINT" in settings and not _points_at(
        settings["MINIO_ENDPOINT"], p.MINIO_SERVICE, p.MINIO_PORT
    ):
        problems.append(
            f"MINIO_ENDPOINT={settings['MINIO_ENDPOINT']} is not {p.MINIO_SERVICE}:{p.MINIO_PORT}"
        )
    if "PUSHGATEWAY_URL" in settings and not _points_at(
        settings["PUSHGATEWAY_URL"], p.PUSHGATEWAY_SERVICE, p.PUSHGATEWAY_PORT
    ):
        problems.append(
            f"PUSHGATEWAY_URL={settings['PUSHGATEWAY_URL']} is not the pushgateway Service"
        )
    if (
        settings.get("CLOUDML_STORE", f"s3://{p.MINIO_BUCKET}").rstrip("/")
        != f"s3://{p.MINIO_BUCKET}"
    ):
        problems.append(
            f"CLOUDML_STORE={settings['CLOUDML_STORE']}, expected s3://{p.MINIO_BUCKET}"
        )
    pool = p.gpu_pool()
    label = settings.get("CLOUDML_GPU_NODE_LABEL")
    if label is not None and label != f"{pool.label_key}={pool.label_value}":
        problems.append(
            f"CLOUDML_GPU_NODE_LABEL={label}, platform pool is {pool.label_key}={pool.label_value}"
        )
    taint = settings.get("CLOUDML_GPU_TAINT")
    want_taint = f"{pool.taint_key}={pool.taint_value}:{pool.taint_effect}"
    if taint and taint != want_taint:  # empty = no taint expected (dev, single node)
        problems.append(f"CLOUDML_GPU_TAINT={taint}, platform pool taint is {want_taint}")
    return problems


def launcher_problems(cm: dict[str, Any] | None, namespace: str = platform.NAMESPACE) -> list[str]:
    """The kfp-launcher ConfigMap must send s3:// artifacts to our MinIO (in `namespace`)
    with our Secret."""
    p = platform
    name = f"ConfigMap {p.KFP_LAUNCHER_CONFIGMAP}"
    if cm is None:
        return [f"{name} (platform.KFP_LAUNCHER_CONFIGMAP) missing"]
    data = cm.get("data") or {}
    problems = []
    root = data.get("defaultPipelineRoot", "")
    if not root.startswith(f"s3://{p.MINIO_BUCKET}/"):
        problems.append(f"{name} defaultPipelineRoot={root!r}, expected s3://{p.MINIO_BUCKET}/...")
    try:
        default = yaml.safe_load(data.get("providers", "")).get("s3", {}).get("default", {})
    except (yaml.YAMLError, AttributeError) as e:
        return problems + [f"{name} providers is not a YAML mapping with s3.default: {e}"]
    if not _points_at(str(default.get("endpoint", "")), p.MINIO_SERVICE, p.MINIO_PORT, namespace):
        problems.append(f"{name} providers.s3.default.endpoint={default.get('endpoint')!r}")
    if default.get("disableSSL") is not True or default.get("forcePathStyle") is not True:
        problems.append(f"{name} providers.s3.default needs disableSSL: true, forcePathStyle: true")
    sref = (default.get("credentials") or {}).get("secretRef") or {}
    if sref.get("secretName") != p.MINIO_SECRET_NAME:
        problems.append(
            f"{name} secretRef.secretName={sref.get('secretName')!r}, expected {p.MINIO_SECRET_NAME}"
        )
    if {sref.get("accessKeyKey"), sref.get("secretKeyKey")} != set(p.MINIO_SECRET_ENV):
        problems.append(f"{name} secretRef keys must be {sorted(p.MINIO_SECRET_ENV)}")
    return problems


def servicemonitor_problems(docs: list[dict[str, Any]]) -> list[str]:
    """The ServiceMonitor (a CRD, not schema-checked) must select the gateway, honorLabels."""
    mons = [d for d in docs if d.get("kind") == "ServiceMonitor"]
    svc = find(docs, "Service", platform.PUSHGATEWAY_SERVICE) or {}
    labels = svc.get("metadata", {}).get("labels") or {}
    port_names = {x.get("name") for x in svc.get("spec", {}).get("ports") or []}
    if not mons:
        return ["no ServiceMonitor for the Pushgateway"]
    problems = []
    for m in mons:
        sel = (m.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
        if not sel or any(labels.get(k) != v for k, v in sel.items()):
            problems.append(
                f"{ref(m)} selector {sel} does not match Service {platform.PUSHGATEWAY_SERVICE}"
            )
        for ep in m.get("spec", {}).get("endpoints") or [{}]:
            if ep.get("honorLabels") is not True:
                problems.append(f"{ref(m)} endpoint needs honorLabels: true")
            if ep.get("port") not in port_names:
                problems.append(
                    f"{ref(m)} endpoint port {ep.get('port')!r} not in {sorted(port_names)}"
                )
    return problems
