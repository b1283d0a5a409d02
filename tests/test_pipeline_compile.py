"""Compile every preset and check the spec: stages and order, fan-out, placement, retries,
caching, parameters and their defaults, and that no credential reaches the YAML."""

from __future__ import annotations

import dataclasses
import importlib
import sys
from pathlib import Path

import pytest
import yaml

from cloudml.cluster import settings as platform
from cloudml.config import Config, key_help, load_config, pipeline_keys, preset_names
from cloudml.flights import FLIGHT_NAMES
from pipelines.training import compile_pipeline

MARKER = "s3cr3t-marker-7f1c"
GPU_TASKS = ("pretrain", "finetune", "evaluate")
CPU_TASKS = ("resolve-config", "fingerprint", "ingest", "member-seeds", "member-config",
             "selection-score", "gate", "promote")  # fmt: skip
REPO = Path(__file__).resolve().parents[1]


def _config_keys() -> list[str]:
    cfg = Config()
    return [f.name for s in (cfg.data, cfg.model, cfg.train) for f in dataclasses.fields(s)]


# config keys with one implemented value: config keys, not pipeline parameters
SINGLE_VALUE_KEYS = {"optimizer", "scheduler"}


@pytest.fixture(scope="module", params=preset_names())
def compiled(request, tmp_path_factory):
    """(preset, pipeline spec, platform spec, raw YAML) with a secret-looking env set."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MINIO_SECRET_KEY", MARKER)
    mp.setenv("MINIO_ACCESS_KEY", MARKER)
    out = tmp_path_factory.mktemp("pipelines") / f"{request.param}.yaml"
    try:
        compile_pipeline(request.param, out)
    finally:
        mp.undo()
    text = out.read_text()
    spec, plat = yaml.safe_load_all(text)
    return request.param, spec, plat, text


def _tasks(spec: dict) -> dict:
    """All tasks by name, the ParallelFor body's included."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        if "dag" in comp:
            tasks.update(comp["dag"]["tasks"])
    return tasks


def test_stages_and_dependencies(compiled):
    """root: resolve-config -> train-evaluate (the one chain: ingest loop, train-members,
    evaluate, selection-score) -> gate -> promote."""
    _, spec, _, _ = compiled
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"resolve-config", "train-evaluate", "gate", "promote"}
    assert root["train-evaluate"]["dependentTasks"] == ["resolve-config"]
    chain = spec["components"]["comp-train-evaluate"]["dag"]["tasks"]
    loop = next(k for k in chain if k.startswith("for-loop"))
    assert chain[loop]["taskInfo"]["name"] == "ingest-each-flight"
    assert set(chain) == {loop, "train-members", "evaluate", "selection-score"}
    assert loop in chain["train-members"]["dependentTasks"]
    assert "train-members" in chain["evaluate"]["dependentTasks"]
    assert chain["evaluate"]["inputs"]["artifacts"]["members"]["taskOutputArtifact"] == {
        "outputArtifactKey": "Output",
        "producerTask": "train-members",
    }
    assert root["gate"]["dependentTasks"] == ["train-evaluate"]
    assert "gate" in root["promote"]["dependentTasks"]  # only a passed gate promotes
    # the shipped model is evaluate's ensemble artifact, not one member's checkpoint
    assert root["promote"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"] == {
        "outputArtifactKey": "model",
        "producerTask": "train-evaluate",
    }
    outputs = spec["components"]["comp-train-evaluate"]["dag"]["outputs"]
    assert outputs["artifacts"]["model"]["artifactSelectors"] == [
        {"outputArtifactKey": "model", "producerSubtask": "evaluate"}
    ]
    assert "ingest" in _tasks(spec)
    # the gate compares evaluate's float outputs (through the chain), not a metrics artifact
    g = root["gate"]["inputs"]["parameters"]
    for key in ("r2", "r2_lo", "r2_hi", "std_ratio", "baseline_r2"):
        assert g[key]["taskOutputParameter"] == {
            "outputParameterKey": key,
            "producerTask": "train-evaluate",
        }
        assert outputs["parameters"][key]["valueFromParameter"] == {
            "outputParameterKey": key,
            "producerSubtask": "evaluate",
        }


def test_every_member_trains_its_own_chain_under_a_parallel_for(compiled):
    """train-members: member-seeds, then ParallelFor(parallelism) over the seeds with one
    member-config (the member's seed) -> pretrain -> finetune chain per member."""
    _, spec, _, _ = compiled
    sub = spec["components"]["comp-train-members"]["dag"]["tasks"]
    loop = next(k for k in sub if k.startswith("for-loop"))
    assert sub[loop]["taskInfo"]["name"] == "train-each-member"
    assert set(sub) == {"member-seeds", loop}
    assert sub[loop]["parameterIterator"]["items"]["inputParameter"].endswith("member-seeds-Output")
    assert sub[loop]["iteratorPolicy"]["parallelismLimit"] == platform.gpu_parallelism()
    body = spec["components"][sub[loop]["componentRef"]["name"]]["dag"]["tasks"]
    assert set(body) == {"member-config", "pretrain", "finetune"}
    seed = body["member-config"]["inputs"]["parameters"]["seed"]
    assert seed["componentInputParameter"].endswith("loop-item")  # the member's own seed
    assert (
        body["pretrain"]["inputs"]["parameters"]["config_json"]["taskOutputParameter"][
            "producerTask"
        ]
        == "member-config"
    )
    assert "pretrain" in body["finetune"]["dependentTasks"]


def test_one_ingest_per_flight(compiled):
    preset, spec, _, _ = compiled
    chain = spec["components"]["comp-train-evaluate"]["dag"]["tasks"]
    loop = next(v for k, v in chain.items() if k.startswith("for-loop"))
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--flights"
    root = spec["root"]["dag"]["tasks"]
    assert root["train-evaluate"]["inputs"]["parameters"]["flights"] == {
        "componentInputParameter": "flights"
    }
    default = spec["root"]["inputDefinitions"]["parameters"]["flights"]["defaultValue"]
    assert default == list(load_config(preset).data.flights) == list(FLIGHT_NAMES)
    body = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert sorted(body) == ["fingerprint", "ingest"]
    # the chain's config input (resolve-config's output at the root), not a loop-item swap
    assert body["ingest"]["inputs"]["parameters"]["config_json"] == {
        "componentInputParameter": "pipelinechannel--config_json"
    }
    assert root["train-evaluate"]["inputs"]["parameters"]["config_json"]["taskOutputParameter"] == {
        "outputParameterKey": "Output",
        "producerTask": "resolve-config",
    }
    assert body["ingest"]["inputs"]["parameters"]["flight"] == {
        "componentInputParameter": "pipelinechannel--flights-loop-item"
    }


def test_parameters_are_every_config_key_with_preset_defaults(compiled):
    preset, spec, _, _ = compiled
    params = spec["root"]["inputDefinitions"]["parameters"]
    extra = {"raw_uri", "threshold", "min_std_ratio", "beat_baseline", "skill_margin"}
    assert set(params) == set(_config_keys()) - SINGLE_VALUE_KEYS | extra
    assert not SINGLE_VALUE_KEYS & set(params)
    assert params["beat_baseline"]["defaultValue"] is True
    assert params["skill_margin"]["defaultValue"] == 0.0
    assert params["ensemble_size"]["defaultValue"] == 2
    flat = load_config(preset).flat()
    for key, value in flat.items():
        if key in SINGLE_VALUE_KEYS:
            continue
        got = params[key]["defaultValue"]
        assert got == value, f"{key}: compiled default {got!r} != preset {value!r}"
    assert params["threshold"]["defaultValue"] == 0.3
    assert params["min_std_ratio"]["defaultValue"] == 0.1
    assert params["scale"]["defaultValue"] == "full"
    assert params["raw_uri"]["defaultValue"] == f"s3://{platform.MINIO_BUCKET}/raw"


def test_resolve_config_component_takes_every_config_key(compiled):
    _, spec, _, _ = compiled
    inputs = spec["components"]["comp-resolve-config"]["inputDefinitions"]["parameters"]
    missing = set(pipeline_keys()) - set(inputs)
    assert not missing, f"components/config.py lacks config key(s) {sorted(missing)}"
    assert set(inputs) == set(pipeline_keys()) | {"preset"}
    assert set(pipeline_keys()) == set(_config_keys()) - SINGLE_VALUE_KEYS


def test_evaluate_asks_for_less_memory_than_training(compiled):
    """Sized from what each task holds (pipelines/chain.py, EVAL_TASK): evaluate reads one
    training shard at a time for its baseline, training holds every training flight."""
    from pipelines.chain import EVAL_TASK, GPU_TASK

    _, spec, _, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    asked = {name: executors[f"exec-{name}"]["container"]["resources"]["resourceMemoryRequest"]
             for name in GPU_TASKS}  # fmt: skip
    assert asked == {"pretrain": GPU_TASK["memory"], "finetune": GPU_TASK["memory"],
                     "evaluate": EVAL_TASK["memory"]}  # fmt: skip
    gib = {k: float(v.removesuffix("Gi")) for k, v in asked.items()}
    assert gib["evaluate"] < gib["finetune"]


def test_gpu_placement_only_on_training_and_evaluation(compiled):
    _, spec, plat, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    kube = plat["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    pool = platform.gpu_pool()
    for name in GPU_TASKS:
        c = executors[f"exec-{name}"]["container"]
        assert c["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
        assert c["resources"]["accelerator"]["resourceCount"] == "1"
        assert c["image"] == platform.gpu_image()
        k = kube[f"exec-{name}"]
        assert k["nodeSelector"]["labels"] == {pool.label_key: pool.label_value}
        assert k["tolerations"] == [
            {
                "key": pool.taint_key,
                "operator": "Equal",
                "value": pool.taint_value,
                "effect": pool.taint_effect,
            }  # fmt: skip
        ]
    for name in CPU_TASKS:
        c = executors[f"exec-{name}"]["container"]
        assert "accelerator" not in c.get("resources", {})
        assert c["resources"]["resourceCpuRequest"] and c["resources"]["resourceMemoryRequest"]
        assert c["image"] == platform.cpu_image()
        k = kube.get(f"exec-{name}", {})
        assert "nodeSelector" not in k and "tolerations" not in k


def test_retries_on_ingest_and_training_none_on_gate(compiled):
    _, spec, _, _ = compiled
    tasks = _tasks(spec)
    for name in ("ingest", "pretrain", "finetune", "promote"):
        rp = tasks[name]["retryPolicy"]
        assert rp["maxRetryCount"] >= 1 and rp["backoffDuration"] and rp["backoffFactor"] > 1
    assert "retryPolicy" not in tasks["gate"]


def test_ingest_cache_key_follows_raw_data(compiled):
    _, spec, _, _ = compiled
    tasks = _tasks(spec)
    # ingest is cached, keyed by an uncached fingerprint of the raw files
    assert tasks["ingest"]["cachingOptions"]["enableCache"] is True
    assert tasks["ingest"]["inputs"]["parameters"]["raw_fingerprint"]["taskOutputParameter"] == {
        "outputParameterKey": "Output",
        "producerTask": "fingerprint",
    }
    assert tasks["fingerprint"]["cachingOptions"].get("enableCache") is not True
    assert tasks["promote"]["cachingOptions"].get("enableCache") is not True
    assert tasks["pretrain"]["cachingOptions"]["enableCache"] is True


def _runtime_placeholders(task: dict) -> list[str]:
    """The inputs of a task that KFP fills per run ({{$.pipeline_job_...}} placeholders)."""
    params = task["inputs"].get("parameters", {})
    return [
        k for k, v in params.items()
        if "{{$." in str(v.get("runtimeValue", {}).get("constant", ""))
    ]  # fmt: skip


def test_training_cache_key_has_no_run_id(compiled):
    """The cache key of a task is its inputs (plus image and command): pretrain and finetune
    take only the shards, the member's config and (finetune) the pretrained model, so an
    unchanged re-run hits the cache; evaluate and promote record the run id and never do."""
    _, spec, _, text = compiled
    tasks = _tasks(spec)
    assert set(tasks["pretrain"]["inputs"]["parameters"]) == {"config_json"}
    assert set(tasks["pretrain"]["inputs"]["artifacts"]) == {"shards"}
    assert set(tasks["finetune"]["inputs"]["parameters"]) == {"config_json"}
    assert set(tasks["finetune"]["inputs"]["artifacts"]) == {"shards", "pretrained"}
    for name in ("resolve-config", "member-seeds", "member-config", "ingest", "pretrain",
                 "finetune"):  # fmt: skip
        assert _runtime_placeholders(tasks[name]) == [], name
        assert tasks[name]["cachingOptions"].get("enableCache") is True, name
    # the counter-check: the placeholder is what the run id looks like in the spec
    assert _runtime_placeholders(tasks["evaluate"]) == ["run_id"]
    assert _runtime_placeholders(tasks["promote"]) == ["run_id"]
    for name in ("pretrain", "finetune"):
        inputs = spec["components"][f"comp-{name}"]["inputDefinitions"]["parameters"]
        assert "run_id" not in inputs


def test_every_parameter_and_component_is_described(compiled):
    """What the Kubeflow UI shows: every root parameter has its description (config keys:
    the one in cloudml.config), every input and output of every component has one, the
    pipeline has one; group components (loops) carry the compiler's copies of root inputs."""
    _, spec, _, _ = compiled
    params = spec["root"]["inputDefinitions"]["parameters"]
    help_ = key_help()
    for name, p in params.items():
        assert p.get("description", "").strip(), f"root parameter {name} has no description"
        if name in help_:
            assert p["description"] == " ".join(help_[name].split()), name
    assert spec["pipelineInfo"]["description"].strip()
    for comp_name, comp in spec["components"].items():
        if comp_name.startswith("comp-for-loop"):
            continue
        for kind in ("inputDefinitions", "outputDefinitions"):
            for section in ("parameters", "artifacts"):
                for name, d in comp.get(kind, {}).get(section, {}).items():
                    assert d.get("description", "").strip(), f"{comp_name} {kind} {name}"


def test_no_generated_display_names(compiled):
    """No task or loop shows in the UI as for-loop-N or with a -2 suffix."""
    _, spec, _, _ = compiled
    import re

    dags = [spec["root"]["dag"], *(c["dag"] for c in spec["components"].values() if "dag" in c)]
    shown = [t["taskInfo"]["name"] for dag in dags for t in dag["tasks"].values()]
    assert shown and not [n for n in shown if re.fullmatch(r"for-loop-\d+|.*-\d+", n)], shown
    assert {"ingest-each-flight", "train-each-member"} <= set(shown)


def test_every_component_has_a_docstring():
    """kfp takes a component's description from its docstring (the IR has no field for it,
    so it is checked on the component objects the pipeline is built from)."""
    from kfp.dsl.base_component import BaseComponent

    import components

    found = {}
    for path in sorted(Path(components.__file__).parent.glob("*.py")):
        mod = importlib.import_module(f"components.{path.stem}")
        found.update({n: c for n, c in vars(mod).items() if isinstance(c, BaseComponent)})
    assert len(found) == 19, sorted(found)
    for name, comp in found.items():
        assert (comp.component_spec.description or "").strip(), name


def test_credentials_only_from_secret_and_configmap(compiled):
    _, spec, plat, text = compiled
    assert MARKER not in text
    kube = plat["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in ("fingerprint", "ingest", *GPU_TASKS, "gate", "promote"):
        (sec,) = kube[f"exec-{name}"]["secretAsEnv"]
        assert sec["secretName"] == platform.MINIO_SECRET_NAME
        assert {e["secretKey"]: e["envVar"] for e in sec["keyToEnv"]} == platform.MINIO_SECRET_ENV
        (cm,) = kube[f"exec-{name}"]["configMapAsEnv"]
        assert cm["configMapName"] == platform.SETTINGS_CONFIGMAP
    for executor in spec["deploymentSpec"]["executors"].values():
        # the only literal env value in the spec is the CPU request (the thread cap)
        env = executor["container"].get("env", [])
        assert [e["name"] for e in env] == ["CLOUDML_CPU_REQUEST"]
        assert env[0]["value"].isdigit()


def test_settings_keys_exist_in_manifest():
    settings = REPO / "manifests" / "base" / "config" / "settings.env"
    if not settings.is_file():
        pytest.skip(f"{settings} not present")
    keys = {line.split("=", 1)[0] for line in settings.read_text().splitlines() if "=" in line}
    training = importlib.import_module("pipelines.training")
    assert set(training.SETTINGS_KEYS) <= keys


def test_display_names_on_every_task(compiled):
    _, spec, _, _ = compiled
    for name, task in _tasks(spec).items():
        assert task["taskInfo"]["name"], name


def test_gpu_pool_override_at_compile_time(monkeypatch, tmp_path):
    monkeypatch.setenv("CLOUDML_GPU_NODE_LABEL", "pool=a100")
    monkeypatch.setenv("CLOUDML_GPU_TAINT", "gpu=yes:NoExecute")
    out = compile_pipeline("tuned", tmp_path / "t.yaml")
    _, plat = yaml.safe_load_all(out.read_text())
    k = plat["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-finetune"]
    assert k["nodeSelector"]["labels"] == {"pool": "a100"}
    assert k["tolerations"][0] == {
        "key": "gpu",
        "operator": "Equal",
        "value": "yes",
        "effect": "NoExecute",
    }


def test_unknown_preset_is_a_clear_error(tmp_path):
    from cloudml.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        compile_pipeline("nope", tmp_path / "x.yaml")
    assert not (tmp_path / "x.yaml").exists()


def test_pipeline_file_compiles_itself(tmp_path):
    """`python -m pipelines.training PRESET OUT` from outside the checkout: the installed
    package compiles without any sys.path help."""
    import subprocess

    out = tmp_path / "b.yaml"
    subprocess.run(
        [sys.executable, "-m", "pipelines.training", "baseline", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
        cwd=tmp_path,
    )
    spec, _ = yaml.safe_load_all(out.read_text())
    assert spec["pipelineInfo"]["name"] == "cloudml-baseline"
    assert spec["root"]["inputDefinitions"]["parameters"]["learning_rate"]["defaultValue"] == 0.001


def test_threads_follow_each_tasks_cpu_request(compiled):
    # a CPU request without a limit leaves no cgroup quota for cloudml.threads to read: the
    # task is told its thread count, equal to the CPUs it requested (at least one)
    _, spec, _, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    for name in GPU_TASKS + CPU_TASKS:
        c = executors[f"exec-{name}"]["container"]
        cpu = float(c["resources"]["resourceCpuRequest"].removesuffix("m")) / (
            1000 if c["resources"]["resourceCpuRequest"].endswith("m") else 1
        )
        env = {e["name"]: e["value"] for e in c.get("env", [])}
        assert env.get("CLOUDML_CPU_REQUEST") == str(max(1, int(cpu))), name
