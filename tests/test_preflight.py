"""`cloudml preflight` against a loopback stand-in of the Kubernetes API, plus its pure checks."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import pytest

from cloudml import cli
from cloudml.cluster import preflight
from cloudml.cluster import settings as platform
from tests.support.k8s_standin import K8sStandin, scenario, write_kubeconfig

ALL_CHECKS = [
    "API server", "GPU pool label", "GPU pool taint", "GPU allocatable", "GPU pool agreement",
    "MinIO credentials", "KFP launcher config", "cloudml settings", "minio Service",
    "pushgateway Service",
]  # fmt: skip


def _run(tmp_path: Path, routes: dict, *extra: str) -> tuple[int, list[str]]:
    """Run the `preflight` subcommand (as cli.py wires it) against a stand-in serving routes."""
    parser = argparse.ArgumentParser()
    preflight.add_command(parser.add_subparsers())
    with K8sStandin(routes) as api:
        cfg = write_kubeconfig(tmp_path / "kubeconfig", api.url)
        args = parser.parse_args(["preflight", "--kubeconfig", str(cfg), *extra])
        return args.func(args), api.requests


def _lines(out: str) -> dict[str, str]:
    """check name -> 'PASS'/'FAIL' from the printed report."""
    status = {}
    for line in out.splitlines():
        if line.startswith(("PASS  ", "FAIL  ")):
            status[line[6:].split(":", 1)[0]] = line[:4]
    return status


def test_registered_in_cli() -> None:
    assert cli.COMMANDS["preflight"].module == "cloudml.cluster.preflight"


def test_healthy_cluster_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, requests = _run(tmp_path, scenario("healthy"))
    out = capsys.readouterr().out
    assert rc == 0, out
    assert _lines(out) == dict.fromkeys(ALL_CHECKS, "PASS")
    assert "3 nvidia.com/gpu on 2 node(s)" in out  # gpu-1 (1) + gpu-2 (2); cpu-1 not in the pool
    ns = f"/api/v1/namespaces/{platform.NAMESPACE}"
    assert f"{ns}/secrets/{platform.MINIO_SECRET_NAME}" in requests
    assert f"{ns}/configmaps/{platform.KFP_LAUNCHER_CONFIGMAP}" in requests


@pytest.mark.parametrize(
    ("name", "failing", "fix"),
    [
        (
            "missing-taint",
            "GPU pool taint",
            "kubectl taint nodes gpu-1 nvidia.com/gpu=present:NoSchedule",
        ),
        ("missing-secret", "MinIO credentials", "minio-credentials.env"),
        ("no-gpus", "GPU allocatable", "NVIDIA GPU Operator"),
    ],
)
def test_broken_cluster_fails_the_right_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, failing: str, fix: str
) -> None:
    rc, _ = _run(tmp_path, scenario(name))
    out = capsys.readouterr().out
    assert rc == 1
    assert _lines(out) == {c: "FAIL" if c == failing else "PASS" for c in ALL_CHECKS}
    fail_line = out.split(f"FAIL  {failing}:", 1)[1].split("\n")[1]
    assert fail_line.strip().startswith("fix:") and fix in fail_line


def test_namespace_option_reads_that_namespace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    routes = scenario("healthy", namespace="team-a")
    rc, requests = _run(tmp_path, routes, "--namespace", "team-a")
    assert rc == 0, capsys.readouterr().out
    assert f"/api/v1/namespaces/team-a/services/{platform.PUSHGATEWAY_SERVICE}" in requests
    # the default namespace finds nothing there: Secret, ConfigMaps and Services fail
    rc, _ = _run(tmp_path, routes)
    status = _lines(capsys.readouterr().out)
    assert rc == 1
    assert [c for c, s in status.items() if s == "FAIL"] == [
        "MinIO credentials", "KFP launcher config", "cloudml settings", "minio Service", "pushgateway Service",
    ]  # fmt: skip


def test_dev_settings_do_not_require_the_taint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    routes = scenario("missing-taint")
    settings = routes[
        f"/api/v1/namespaces/{platform.NAMESPACE}/configmaps/{platform.SETTINGS_CONFIGMAP}"
    ]
    settings["data"]["CLOUDML_GPU_TAINT"] = ""  # what overlays/dev renders
    rc, _ = _run(tmp_path, routes)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "GPU pool taint: not required" in out


def test_unreachable_api_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}")
    with pytest.raises(
        preflight.PreflightError, match=rf"127\.0\.0\.1:{port}/version: cannot reach"
    ):
        preflight.preflight(kubeconfig=str(cfg))


def test_missing_kubeconfig_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(preflight.PreflightError, match="nope.yaml"):
        preflight.preflight(kubeconfig=str(tmp_path / "nope.yaml"))


def test_pool_agreement_catches_a_different_pool() -> None:
    pool = platform.GpuPool()
    cm = {"data": {"CLOUDML_GPU_NODE_LABEL": "pool=a100", "CLOUDML_GPU_TAINT": ""}}
    check = preflight.check_pool_agreement(cm, pool)
    assert not check.ok and "pool=a100" in check.detail
    cm["data"]["CLOUDML_GPU_NODE_LABEL"] = f"{pool.label_key}={pool.label_value}"
    assert preflight.check_pool_agreement(cm, pool).ok


def test_launcher_with_wrong_endpoint_fails() -> None:
    cm = scenario("healthy")[
        f"/api/v1/namespaces/{platform.NAMESPACE}/configmaps/{platform.KFP_LAUNCHER_CONFIGMAP}"
    ]
    assert preflight.check_launcher(cm, platform.NAMESPACE).ok
    cm["data"]["providers"] = cm["data"]["providers"].replace(":9000", ":9001")
    check = preflight.check_launcher(cm, platform.NAMESPACE)
    assert not check.ok and "endpoint" in check.detail


def test_launcher_endpoint_must_be_in_the_checked_namespace() -> None:
    """Standalone KFP: the overlay re-targeted to `kubeflow` names minio.kubeflow.svc."""
    cm = scenario("healthy")[
        f"/api/v1/namespaces/{platform.NAMESPACE}/configmaps/{platform.KFP_LAUNCHER_CONFIGMAP}"
    ]
    cm["data"]["providers"] = cm["data"]["providers"].replace(
        "minio.cloudml.svc", "minio.kubeflow.svc"
    )
    assert preflight.check_launcher(cm, "kubeflow").ok
    check = preflight.check_launcher(cm, platform.NAMESPACE)
    assert not check.ok and "minio.kubeflow.svc" in check.detail
