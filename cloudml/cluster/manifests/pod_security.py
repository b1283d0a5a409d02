"""The "restricted" Pod Security Standard, plus resource requests and limits, per workload."""

from __future__ import annotations

from typing import Any

from cloudml.cluster.manifests.objects import ref

# kinds whose pod template we can find, and where
_POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
# volume types the restricted profile allows
_RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec inside a workload object, or None for non-workloads."""
    path = _POD_SPEC_PATHS.get(doc.get("kind", ""))
    if path is None:
        return None
    node: Any = doc
    for key in path:
        node = (node or {}).get(key)
    return node or {}


def pss_problems(doc: dict[str, Any]) -> list[str]:
    """Violations of the "restricted" Pod Security Standard plus missing requests/limits."""
    spec = pod_spec(doc)
    if spec is None:
        return []
    where = ref(doc)
    problems: list[str] = []
    pod_sc = spec.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            problems.append(f"{where}: spec.{key} must be false")
    for vol in spec.get("volumes") or []:
        kinds = set(vol) - {"name"}
        if not kinds <= _RESTRICTED_VOLUMES:
            problems.append(f"{where}: volume {vol.get('name')} uses {sorted(kinds)}")
    if pod_sc.get("runAsUser") == 0:
        problems.append(f"{where}: securityContext.runAsUser must not be 0")
    containers = [
        (group, c)
        for group in ("initContainers", "containers", "ephemeralContainers")
        for c in spec.get(group) or []
    ]
    if not containers:
        problems.append(f"{where}: no containers")
    for group, c in containers:
        at = f"{where} {group[:-1]} {c.get('name')}"
        sc = c.get("securityContext") or {}
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        if non_root is not True:
            problems.append(f"{at}: runAsNonRoot must be true (pod or container)")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problems.append(f"{at}: runAsUser must not be 0")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{at}: securityContext.allowPrivilegeEscalation must be false")
        if sc.get("privileged"):
            problems.append(f"{at}: securityContext.privileged must be false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{at}: securityContext.capabilities.drop must include ALL")
        extra = set(caps.get("add") or []) - {"NET_BIND_SERVICE"}
        if extra:
            problems.append(f"{at}: capabilities.add {sorted(extra)} not allowed")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{at}: seccompProfile.type must be RuntimeDefault (got {seccomp})")
        if group != "ephemeralContainers":
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                missing = {"cpu", "memory"} - set(res.get(kind) or {})
                if missing:
                    problems.append(f"{at}: resources.{kind} missing {sorted(missing)}")
    return problems
