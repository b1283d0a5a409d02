"""manifests/ and `cloudml.cluster.manifests`: the real tree passes; broken copies fail."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml

from cloudml.cluster import settings as platform
from cloudml.cluster.manifests import metric_names, platform_names, pod_security, runner, tools
from tests.support.skips import skip_or_fail

ROOT = Path(__file__).resolve().parents[1] / "manifests"
# The metric contract as written in the task brief (telemetry.METRIC_NAMES is the code copy).
CONTRACT = frozenset({
    "cloudml_epoch", "cloudml_train_loss", "cloudml_epoch_selection_loss", "cloudml_learning_rate",
    "cloudml_val_r2", "cloudml_val_mae_km", "cloudml_val_rmse_km", "cloudml_val_loss",
    "cloudml_val_std_ratio", "cloudml_val_samples", "cloudml_stage_duration_seconds",
    "cloudml_gate_passed", "cloudml_gate_threshold", "cloudml_last_success_timestamp_seconds",
    "cloudml_champion_r2", "cloudml_promoted",
    # issue 14: intervals, the baseline, the ensemble
    "cloudml_val_r2_lower", "cloudml_val_r2_upper", "cloudml_val_mae_km_lower",
    "cloudml_val_mae_km_upper", "cloudml_baseline_r2", "cloudml_val_member_r2_min",
    "cloudml_val_member_r2_max", "cloudml_ensemble_size",
})  # fmt: skip


def _need(tool: str) -> None:
    if tools.find_tool(tool) is None:
        skip_or_fail(f"{tool} not installed")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """Every overlay rendered once (kubectl kustomize) for the pure checks below."""
    _need("kubectl")
    tree = tmp_path_factory.mktemp("tree") / "manifests"
    tools.stage_tree(ROOT, tree)
    return {p.name: tools.render_overlay(p) for p in sorted((tree / "overlays").iterdir())}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A private copy of manifests/ to break."""
    dest = tmp_path / "manifests"
    shutil.copytree(ROOT, dest)
    return dest


def _failed(results: list[runner.CheckResult]) -> dict[str, tuple[str, ...]]:
    return {r.name: r.problems for r in results if not r.ok}


def test_real_tree_passes_every_check_but_metrics() -> None:
    for tool in ("kubectl", "kubernetes-validate", "promtool"):
        _need(tool)
    results = runner.run_checks(ROOT, [c for c in runner.CHECKS if c != "metrics"])
    assert _failed(results) == {}
    names = " ".join(r.name for r in results)
    for overlay in ("dev", "gpu-cluster"):
        for check in ("render", "schema", "pss", "platform"):
            assert f"{check} overlays/{overlay}" in names
    assert "promtool" in names


def test_dashboard_and_alerts_use_only_contract_metrics(rendered: dict[str, list[dict]]) -> None:
    docs = rendered["dev"]
    try:
        names = metric_names.contract_metric_names()
    except ImportError:
        skip_or_fail("cloudml.cluster.telemetry (METRIC_NAMES) not importable yet")
    assert names == CONTRACT, "telemetry.METRIC_NAMES drifted from the agreed contract"
    result = runner.metrics_result(metric_names.rule_groups(docs), metric_names.dashboards(docs))
    assert result.ok, result.problems


def test_metric_check_catches_unknown_name(rendered: dict[str, list[dict]]) -> None:
    docs = copy.deepcopy(rendered["dev"])
    groups = metric_names.rule_groups(docs)
    exprs = [(r["alert"], r["expr"]) for g in groups for r in g["rules"]]
    assert metric_names.metric_problems(exprs, CONTRACT) == []
    exprs.append(("typo", 'cloudml_val_r2_score{stage="evaluate"} < 0.3'))
    assert metric_names.metric_problems(exprs, CONTRACT) == [
        "typo: metric cloudml_val_r2_score is not in cloudml.cluster.telemetry.METRIC_NAMES"
    ]
    # every contract name the dashboard shows is one the contract has, and it shows them all
    board = [
        e
        for _, text in metric_names.dashboards(docs)
        for e in metric_names.dashboard_exprs(yaml.safe_load(text))
    ]
    shown = set().union(*(metric_names.promql_metric_names(e) for e in board))
    assert shown == CONTRACT


def test_promql_metric_names_skips_functions_labels_and_keywords() -> None:
    expr = (
        "sum by (pipeline) (rate(cloudml_a[5m] offset 1h)) > on(job) group_left(stage) "
        'max_over_time(foo:bar{stage="x y"}[1d:5m]) or absent(up{job="pushgateway"}) > 8 * 86400'
    )
    assert metric_names.promql_metric_names(expr) == {"cloudml_a", "foo:bar", "up"}


def test_overlays_agree_with_platform_names(rendered: dict[str, list[dict]]) -> None:
    for name, docs in rendered.items():
        kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
        assert ("Secret", platform.MINIO_SECRET_NAME) in kinds, name
        assert ("ConfigMap", platform.KFP_LAUNCHER_CONFIGMAP) in kinds, name
        assert ("ConfigMap", platform.SETTINGS_CONFIGMAP) in kinds, name
        assert ("ServiceAccount", platform.SERVICE_ACCOUNT) in kinds, name
        assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {
            platform.NAMESPACE
        }
        assert platform_names.platform_problems(docs) == []
    pool = platform.GpuPool()
    gpu = next(
        d for d in rendered["gpu-cluster"] if d["metadata"]["name"] == platform.SETTINGS_CONFIGMAP
    )
    assert gpu["data"]["CLOUDML_GPU_NODE_LABEL"] == f"{pool.label_key}={pool.label_value}"
    assert (
        gpu["data"]["CLOUDML_GPU_TAINT"]
        == f"{pool.taint_key}={pool.taint_value}:{pool.taint_effect}"
    )
    dev = next(d for d in rendered["dev"] if d["metadata"]["name"] == platform.SETTINGS_CONFIGMAP)
    assert dev["data"]["CLOUDML_GPU_TAINT"] == ""


def test_platform_check_catches_wrong_launcher_secret(rendered: dict[str, list[dict]]) -> None:
    docs = copy.deepcopy(rendered["dev"])
    cm = next(d for d in docs if d["metadata"]["name"] == platform.KFP_LAUNCHER_CONFIGMAP)
    cm["data"]["providers"] = cm["data"]["providers"].replace(
        platform.MINIO_SECRET_NAME, "minio-creds"
    )
    problems = platform_names.platform_problems(docs)
    assert len(problems) == 1 and "secretName='minio-creds'" in problems[0]


def test_pss_problems_on_a_minimal_pod() -> None:
    good_container = {
        "name": "c",
        "resources": {
            "requests": {"cpu": "1", "memory": "1Gi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        },
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    pod = {
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [good_container],
        },
    }
    assert pod_security.pss_problems(pod) == []
    bad = copy.deepcopy(pod)
    bad["spec"]["volumes"] = [{"name": "h", "hostPath": {"path": "/"}}]
    bad["spec"]["containers"][0]["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}
    del bad["spec"]["containers"][0]["resources"]["limits"]
    assert pod_security.pss_problems(bad) == [
        "Pod/p: volume h uses ['hostPath']",
        "Pod/p container c: securityContext.capabilities.drop must include ALL",
        "Pod/p container c: resources.limits missing ['cpu', 'memory']",
    ]


def test_removed_security_context_fails_pss(tree: Path) -> None:
    _need("kubectl")
    path = tree / "base" / "pushgateway-deployment.yaml"
    doc = yaml.safe_load(path.read_text())
    del doc["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    path.write_text(yaml.safe_dump(doc))
    failed = _failed(runner.run_checks(tree, ["pss"]))
    assert set(failed) == {"pss overlays/dev", "pss overlays/gpu-cluster"}
    assert failed["pss overlays/dev"] == (
        "Deployment/pushgateway container pushgateway: securityContext.allowPrivilegeEscalation must be false",
        "Deployment/pushgateway container pushgateway: securityContext.capabilities.drop must include ALL",
    )


def test_unknown_field_fails_schema(tree: Path) -> None:
    _need("kubectl")
    _need("kubernetes-validate")
    path = tree / "base" / "minio-service.yaml"
    path.write_text(
        path.read_text().replace("  selector:\n", "  selectr:\n    x: y\n  selector:\n")
    )
    failed = _failed(runner.run_checks(tree, ["schema"]))
    assert set(failed) == {
        f"schema overlays/{o} (kubernetes-validate --strict -k 1.30.0)"
        for o in ("dev", "gpu-cluster")
    }
    for problems in failed.values():
        assert (
            len(problems) == 1
            and "service/minio" in problems[0]
            and "'selectr' was unexpected" in problems[0]
        )


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        # not PromQL: promtool check rules rejects it
        ("expr: cloudml_gate_passed{job=\"cloudml\",stage=\"gate\"} == 0",
         "expr: cloudml_gate_passed{job=\"cloudml\",stage=\"gate\" == 0", "promtool check rules"),
        # valid PromQL, wrong threshold: the unit test expecting the alert at day 9 fails
        ("> 8 * 86400", "> 80 * 86400", "promtool test rules"),
    ],
)  # fmt: skip
def test_broken_alert_rule_fails_promtool(tree: Path, old: str, new: str, message: str) -> None:
    _need("kubectl")
    _need("promtool")
    path = tree / "base" / "prometheusrule.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    failed = _failed(runner.run_checks(tree, ["promtool"]))
    assert list(failed) == ["promtool check + test rules"]
    (problem,) = failed["promtool check + test rules"]
    assert problem.startswith(message)
    if "test" in message:
        assert "CloudMLRetrainingStale" in problem


def test_main_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert runner.main([str(tmp_path)]) == 2
    assert "overlays not found" in capsys.readouterr().err


def test_settings_hold_every_key_the_pipeline_maps(rendered: dict[str, list[dict]]) -> None:
    """The pipeline maps cloudml-settings keys to env with optional=True: a key missing here
    would silently leave a task without it, so the overlays must carry every one."""
    try:
        from pipelines.training import SETTINGS_KEYS
    except ImportError as e:
        skip_or_fail(f"pipelines.training not importable: {e}")
    for name, docs in rendered.items():
        (settings,) = [d for d in docs if d["metadata"]["name"] == platform.SETTINGS_CONFIGMAP]
        assert set(SETTINGS_KEYS) <= set(settings["data"]), name
