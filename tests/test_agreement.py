"""The compiled pipeline and the gpu-cluster manifests agree, compared directly (not only
each against cloudml/cluster/settings.py): node selector, toleration, Secret and ConfigMap names,
and the image tag `make images` builds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from cloudml.cluster import settings as platform
from cloudml.cluster.manifests import tools
from tests.support.skips import skip_or_fail

ROOT = Path(__file__).resolve().parents[1]
GPU_EXECUTORS = {"exec-pretrain", "exec-finetune", "exec-evaluate"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    from pipelines.training import compile_pipeline

    out = tmp_path_factory.mktemp("compiled") / "tuned.yaml"
    compile_pipeline("tuned", out)
    return list(yaml.safe_load_all(out.read_text()))


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    if tools.find_tool("kubectl") is None:
        skip_or_fail("kubectl not found (needed to render the overlays)")
    tree = tmp_path_factory.mktemp("tree") / "manifests"
    tools.stage_tree(ROOT / "manifests", tree)
    return tools.render_overlay(tree / "overlays" / "gpu-cluster")


def _settings(docs: list[dict]) -> dict[str, str]:
    (cm,) = [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("cloudml-settings")
    ]
    return cm["data"]


def test_gpu_placement_matches_the_overlay(compiled, gpu_cluster):
    settings = _settings(gpu_cluster)
    label_key, label_value = settings["CLOUDML_GPU_NODE_LABEL"].split("=", 1)
    taint_kv, effect = settings["CLOUDML_GPU_TAINT"].split(":")
    taint_key, taint_value = taint_kv.split("=")
    executors = compiled[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    placed = {name for name, spec in executors.items() if "nodeSelector" in spec}
    assert placed == GPU_EXECUTORS
    for name in GPU_EXECUTORS:
        spec = executors[name]
        assert spec["nodeSelector"]["labels"] == {label_key: label_value}, name
        assert spec["tolerations"] == [
            {"key": taint_key, "operator": "Equal", "value": taint_value, "effect": effect}
        ], name


def test_secret_and_settings_names_match_the_overlay(compiled, gpu_cluster):
    secrets = {d["metadata"]["name"] for d in gpu_cluster if d["kind"] == "Secret"}
    configmaps = {d["metadata"]["name"] for d in gpu_cluster if d["kind"] == "ConfigMap"}
    executors = compiled[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    used_secrets = {s["secretName"] for e in executors.values() for s in e.get("secretAsEnv", [])}
    used_cms = {c["configMapName"] for e in executors.values() for c in e.get("configMapAsEnv", [])}
    assert used_secrets and used_secrets <= secrets
    assert used_cms and used_cms <= configmaps
    keys = {
        k["secretKey"]
        for e in executors.values()
        for s in e.get("secretAsEnv", [])
        for k in s["keyToEnv"]
    }
    (secret,) = [
        d for d in gpu_cluster if d["kind"] == "Secret" and d["metadata"]["name"] in used_secrets
    ]
    assert keys <= set(secret.get("data", {})) | set(secret.get("stringData", {}))


def test_images_carry_the_tag_make_images_builds(compiled):
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M)[1]
    images = {c["container"]["image"] for c in compiled[0]["deploymentSpec"]["executors"].values()}
    build = (ROOT / "images" / "build.sh").read_text()
    tag = platform.image_tag()  # $CLOUDML_TAG, which `make` sets to the same TAG as `make images`
    assert tag == version or "CLOUDML_TAG" in __import__("os").environ
    reg = platform.registry()
    assert images == {f"{reg}/cloudml-cpu:{tag}", f"{reg}/cloudml-gpu:{tag}"}
    # build.sh names each image cloudml-<kind> for the kinds it builds (cpu, gpu)
    assert 'image="${registry}/cloudml-${kind}:${tag}"' in build
    for image in images:
        kind = image.split("/")[-1].split(":")[0].removeprefix("cloudml-")
        assert re.search(rf"kinds=\([^)]*\b{kind}\b", build), kind  # built by default
