"""Render and check every kustomize overlay under manifests/: `make manifests-check`.

    python -m cloudml.cluster.manifests_check manifests

Per overlay: `kubectl kustomize` renders it; `kubernetes-validate --strict` checks every
built-in kind against the Kubernetes 1.30 schemas (unknown fields fail); every pod template
meets the "restricted" Pod Security Standard with resource requests and limits; the names
agree with cloudml/cluster/settings.py. Once: `promtool check rules` and `promtool test rules` on the
PrometheusRule, the Grafana dashboard parses, and every metric name in the dashboard and
the alerts is in cloudml.cluster.telemetry.METRIC_NAMES. One PASS/FAIL line per check; exit 1 on
any failure.

The checks are pure functions over rendered objects (dicts); only `render_overlay`,
`validate_schemas` and the promtool runner touch subprocesses.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from cloudml.cluster import settings as platform

K8S_VERSION = "1.30.0"
CHECKS = ("render", "schema", "pss", "platform", "promtool", "metrics")

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
# non-cloudml series the alerts may use (Prometheus' own scrape health, Pushgateway's)
EXTERNAL_METRICS = frozenset({"up", "push_time_seconds", "push_failure_time_seconds"})
_PROMQL_WORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "inf", "nan", "atan2",
})  # fmt: skip


@dataclass(frozen=True)
class CheckResult:
    """One line of the report: `PASS name` or `FAIL name: problems`."""

    name: str
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        if self.ok:
            return f"PASS  {self.name}"
        return f"FAIL  {self.name}:\n" + "\n".join(f"        - {p}" for p in self.problems)


# --- pure checks over rendered objects ---------------------------------------------------


def is_builtin(doc: dict[str, Any]) -> bool:
    """True for core/apps/batch/*.k8s.io kinds (in kubernetes-validate's schemas), not CRDs."""
    group = str(doc.get("apiVersion", "")).rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def ref(doc: dict[str, Any]) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


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


def _find(docs: Iterable[dict[str, Any]], kind: str, name: str) -> dict[str, Any] | None:
    for d in docs:
        if d.get("kind") == kind and d.get("metadata", {}).get("name") == name:
            return d
    return None


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
    ns = _find(docs, "Namespace", p.NAMESPACE)
    if ns is None:
        problems.append(f"Namespace {p.NAMESPACE} (platform.NAMESPACE) not rendered")
    for d in docs:
        meta = d.get("metadata", {})
        if d.get("kind") != "Namespace" and meta.get("namespace") != p.NAMESPACE:
            problems.append(
                f"{ref(d)} is in namespace {meta.get('namespace')!r}, not {p.NAMESPACE}"
            )

    if _find(docs, "ServiceAccount", p.SERVICE_ACCOUNT) is None:
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

    secret = _find(docs, "Secret", p.MINIO_SECRET_NAME)
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
        svc = _find(docs, "Service", name)
        ports = [x.get("port") for x in (svc or {}).get("spec", {}).get("ports") or []]
        if port not in ports:
            problems.append(f"Service {name} with port {port} missing (has {ports})")

    settings = (_find(docs, "ConfigMap", p.SETTINGS_CONFIGMAP) or {}).get("data")
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

    problems += launcher_problems(_find(docs, "ConfigMap", p.KFP_LAUNCHER_CONFIGMAP))
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
    svc = _find(docs, "Service", platform.PUSHGATEWAY_SERVICE) or {}
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


def promql_metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (no parser: strip what is not a name)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # range / subquery durations
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\boffset\s+-?\w+", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.$])([a-zA-Z_:][\w:]*)(\s*\()?", s):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _PROMQL_WORDS or re.fullmatch(r"\d+[smhdwy]", word):
            continue
        names.add(word)
    return names


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    """Every query in a Grafana dashboard: panel targets (rows included) and variables."""
    exprs: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets") or [] if t.get("expr"))
            walk(panel.get("panels") or [])

    walk(dashboard.get("panels") or [])
    for var in (dashboard.get("templating") or {}).get("list") or []:
        query = var.get("query")
        if var.get("type") == "query" and isinstance(query, str):
            m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", query)
            exprs.append(m.group(1) if m else query)
    return exprs


def metric_problems(named_exprs: Iterable[tuple[str, str]], allowed: frozenset[str]) -> list[str]:
    """Names in (where, expr) pairs that are neither in the contract nor external."""
    problems = []
    for where, expr in named_exprs:
        for name in sorted(promql_metric_names(expr)):
            if name not in allowed and name not in EXTERNAL_METRICS:
                problems.append(f"{where}: metric {name} is not in cloudml.cluster.telemetry.METRIC_NAMES")
    return problems


def rule_groups(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [g for d in docs if d.get("kind") == "PrometheusRule" for g in d["spec"]["groups"]]


def dashboards(docs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(where, json text) for every Grafana dashboard ConfigMap entry."""
    return [
        (f"{ref(d)} {key}", text)
        for d in docs
        if d.get("kind") == "ConfigMap" and "grafana_dashboard" in d["metadata"].get("labels", {})
        for key, text in (d.get("data") or {}).items()
        if key.endswith(".json")
    ]


# --- thin I/O ---------------------------------------------------------------------------


def _tool(name: str) -> str | None:
    """A tool from the venv's bin (kubernetes-validate) or PATH (kubectl, promtool)."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def stage_tree(root: Path, dest: Path) -> list[str]:
    """Copy manifests/ to dest; fill each missing `X.env` from `X.env.example`.

    Real credential files are git-ignored, so a fresh checkout lacks them; the check
    renders with the example instead (and says so) to test structure, not secrets.
    """
    shutil.copytree(root, dest)
    notes = []
    for example in sorted(dest.rglob("*.env.example")):
        env = example.with_suffix("")
        if not env.exists():
            shutil.copyfile(example, env)
            notes.append(f"{env.relative_to(dest)} missing: rendered with {example.name}")
    return notes


def render_overlay(path: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize PATH` -> objects. Raises RuntimeError with kubectl's message."""
    kubectl = _tool("kubectl")
    if kubectl is None:
        raise RuntimeError("kubectl not found on PATH (needed for `kubectl kustomize`)")
    out = _run([kubectl, "kustomize", str(path)])
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip() or out.stdout.strip())
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def validate_schemas(docs: list[dict[str, Any]], workdir: Path) -> list[str]:
    """kubernetes-validate --strict on the built-in kinds; its ERROR lines as problems."""
    exe = _tool("kubernetes-validate")
    if exe is None:
        return ["kubernetes-validate not installed (pip install kubernetes-validate)"]
    builtin = [d for d in docs if is_builtin(d)]
    path = workdir / "builtin.yaml"
    path.write_text(yaml.safe_dump_all(builtin, sort_keys=False))
    out = _run([exe, "--strict", "-k", K8S_VERSION, "--quiet", str(path)])
    if out.returncode == 0:
        return []
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if "ERROR" in ln]
    return [ln.replace(str(path), "").strip() for ln in lines] or [out.stdout + out.stderr]


def promtool_problems(groups: list[dict[str, Any]], tests_dir: Path, workdir: Path) -> list[str]:
    """`promtool check rules` on the groups, then `promtool test rules` on tests_dir/*.yaml."""
    promtool = _tool("promtool")
    if promtool is None:
        return ["promtool not found (Debian package prometheus)"]
    (workdir / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, allow_unicode=True))
    out = _run([promtool, "check", "rules", "rules.yaml"], cwd=workdir)
    if out.returncode != 0:
        return ["promtool check rules: " + (out.stdout + out.stderr).strip()]
    tests = sorted(tests_dir.glob("*.yaml"))
    if not tests:
        return [f"no promtool unit tests in {tests_dir}"]
    for t in tests:
        shutil.copyfile(t, workdir / t.name)
    out = _run([promtool, "test", "rules", *(t.name for t in tests)], cwd=workdir)
    if out.returncode != 0:
        return ["promtool test rules: " + (out.stdout + out.stderr).strip()]
    return []


def contract_metric_names() -> frozenset[str]:
    """cloudml.cluster.telemetry.METRIC_NAMES, imported lazily (another module owns it)."""
    from cloudml.cluster.telemetry import METRIC_NAMES

    return frozenset(METRIC_NAMES)


# --- driver -----------------------------------------------------------------------------


def run_checks(root: Path, checks: Iterable[str] = CHECKS) -> list[CheckResult]:
    """Every check over manifests root `root`; `checks` picks a subset (tests use this)."""
    wanted = set(checks)
    root = Path(root)
    overlays = sorted(p.parent for p in root.glob("overlays/*/kustomization.yaml"))
    results: list[CheckResult] = []
    if not overlays:
        return [CheckResult(f"overlays in {root}", ("no overlays/*/kustomization.yaml",))]
    with tempfile.TemporaryDirectory(prefix="manifests-check-") as tmp:
        tmp_path = Path(tmp)
        notes = stage_tree(root, tmp_path / "tree")
        rendered: dict[str, list[dict[str, Any]]] = {}
        for overlay in overlays:
            name = overlay.relative_to(root).as_posix()
            try:
                rendered[name] = render_overlay(tmp_path / "tree" / name)
                results.append(CheckResult(f"render {name} ({len(rendered[name])} objects)"))
            except RuntimeError as e:
                results.append(CheckResult(f"render {name}", (str(e),)))
        for note in notes:
            print(f"note  {note}")
        per_overlay: list[tuple[str, Callable[[list[dict[str, Any]]], list[str]]]] = [
            ("pss", lambda docs: [p for d in docs for p in pss_problems(d)]),
            ("platform", lambda docs: platform_problems(docs) + servicemonitor_problems(docs)),
        ]
        for name, docs in rendered.items():
            if "schema" in wanted:
                work = tmp_path / f"schema-{name.replace('/', '-')}"
                work.mkdir()
                results.append(
                    CheckResult(
                        f"schema {name} (kubernetes-validate --strict -k {K8S_VERSION})",
                        tuple(validate_schemas(docs, work)),
                    )
                )
            for check, fn in per_overlay:
                if check in wanted:
                    results.append(CheckResult(f"{check} {name}", tuple(fn(docs))))
        if not rendered:
            return results
        # rules and dashboards come from the base; the first overlay that has them is enough
        docs = next(iter(rendered.values()))
        groups = rule_groups(docs)
        if "promtool" in wanted:
            work = tmp_path / "promtool"
            work.mkdir()
            problems = (
                promtool_problems(groups, root / "tests", work)
                if groups
                else ["no PrometheusRule rendered"]
            )
            results.append(CheckResult("promtool check + test rules", tuple(problems)))
        if "metrics" in wanted:
            results.append(metrics_result(groups, dashboards(docs)))
    return results


def metrics_result(groups: list[dict[str, Any]], boards: list[tuple[str, str]]) -> CheckResult:
    """Dashboards parse; every metric in dashboards and alerts is in the contract."""
    name = "dashboard JSON + metric names vs cloudml.cluster.telemetry.METRIC_NAMES"
    problems: list[str] = []
    exprs: list[tuple[str, str]] = []
    if not boards:
        problems.append("no Grafana dashboard ConfigMap (label grafana_dashboard)")
    for where, text in boards:
        try:
            board = json.loads(text)
        except json.JSONDecodeError as e:
            problems.append(f"{where}: not valid JSON: {e}")
            continue
        found = dashboard_exprs(board)
        if not found:
            problems.append(f"{where}: no queries")
        exprs += [(where, e) for e in found]
    exprs += [
        (f"alert {r.get('alert') or r.get('record')}", str(r.get("expr", "")))
        for g in groups
        for r in g.get("rules") or []
    ]
    try:
        allowed = contract_metric_names()
    except ImportError as e:
        return CheckResult(name, (*problems, f"cannot import cloudml.cluster.telemetry.METRIC_NAMES: {e}"))
    return CheckResult(name, tuple(problems + metric_problems(exprs, allowed)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cloudml.cluster.manifests_check", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "root", type=Path, nargs="?", default=Path("manifests"), help="manifests directory"
    )
    parser.add_argument("--only", action="append", choices=CHECKS, help="run only these checks")
    args = parser.parse_args(argv)
    if not (args.root / "overlays").is_dir():
        print(
            f"error: {args.root}/overlays not found (expected the kustomize tree)", file=sys.stderr
        )
        return 2
    results = run_checks(args.root, args.only or CHECKS)
    for r in results:
        print(r.line())
    failed = sum(not r.ok for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
