"""The CloudML training pipeline, compiled once per preset.

    resolve-config -> fingerprint + ingest (ParallelFor over `flights`) -> pretrain -> finetune
        -> evaluate -> gate -> promote

Parameters: every key of cloudml.config (defaults from the preset; the Kubeflow UI shows and
edits each), plus raw_uri, threshold and min_std_ratio. The signature is built from
cloudml.config, so a new config key becomes a pipeline parameter without an edit here.

Placement: pretrain/finetune/evaluate request one nvidia.com/gpu and carry the GPU pool's
node selector and toleration (cloudml.cluster.settings.gpu_pool(), CLOUDML_GPU_* env overrides at
compile time); resolve-config, ingest, gate and promote run on CPU with CPU/memory requests.
Credentials reach tasks only as env from the MinIO Secret; settings from the cloudml-settings
ConfigMap. Compile: `python -m pipelines.training tuned OUT.yaml` or `cloudml compile`.
"""

from __future__ import annotations

import inspect
import sys
import typing
from pathlib import Path
from typing import Any

from kfp import dsl, kubernetes

from cloudml.cluster import settings as platform
from cloudml.config import SECTIONS, key_help, load_config, pipeline_keys
from cloudml.gate import (
    DEFAULT_BEAT_BASELINE,
    DEFAULT_MIN_STD_RATIO,
    DEFAULT_SKILL_MARGIN,
    DEFAULT_THRESHOLD,
)
from components.config import resolve_config
from components.evaluate import evaluate
from components.finetune import finetune
from components.fingerprint import fingerprint
from components.gate import gate
from components.ingest import ingest
from components.members import member_seeds
from components.pretrain import pretrain
from components.promote import promote

# Non-secret settings in the cloudml-settings ConfigMap, exposed under the same env names.
SETTINGS_KEYS = (
    "MINIO_ENDPOINT",
    "MINIO_BUCKET",
    "MINIO_SECURE",
    "CLOUDML_STORE",
    "PUSHGATEWAY_URL",
)
DEFAULT_RAW_URI = f"s3://{platform.MINIO_BUCKET}/raw"
EXTRA_PARAMS: dict[str, tuple[type, Any]] = {
    "raw_uri": (str, DEFAULT_RAW_URI),
    "threshold": (float, DEFAULT_THRESHOLD),
    "min_std_ratio": (float, DEFAULT_MIN_STD_RATIO),
    "beat_baseline": (bool, DEFAULT_BEAT_BASELINE),
    "skill_margin": (float, DEFAULT_SKILL_MARGIN),
}
# What the Kubeflow UI shows beside each extra parameter (config keys: cloudml.config.key_help)
EXTRA_HELP: dict[str, str] = {
    "raw_uri": "Where the raw flights live: raw_uri/<flight>/{IRAI,CPL,nav}.h5 (s3://bucket/"
    "prefix on MinIO, or a local directory).",
    "threshold": "Gate: the ensemble's R² on validation_flight must be above this to pass "
    "(and to be promoted).",
    "min_std_ratio": "Gate: std(prediction) / std(truth) must be at least this; catches a "
    "collapsed near-constant model. 0 disables the check.",
    "beat_baseline": "Gate: also require R² above the ridge baseline's (global frame "
    "statistics + solar angles) plus skill_margin.",
    "skill_margin": "Gate, with beat_baseline: how far above the baseline's R² the "
    "ensemble's must be.",
}
# Retries with exponential backoff: ingest and training resume from what they wrote
# (a finished shard / last.pt), so a preempted pod picks up where it stopped.
RETRY = {"num_retries": 3, "backoff_duration": "60s", "backoff_factor": 2.0,
         "backoff_max_duration": "1800s"}  # fmt: skip
CPU_TASK = {"cpu": "2", "memory": "8Gi"}
GPU_TASK = {"cpu": "4", "memory": "32Gi"}
SMALL_TASK = {"cpu": "500m", "memory": "512Mi"}


def _param_type(typ: Any) -> type:
    """Pipeline parameter type for a config field type (tuples become lists)."""
    return typ if typ in (bool, int, float, str) else list


def pipeline_parameters(preset: str) -> dict[str, tuple[type, Any]]:
    """{name: (type, default)} of every pipeline parameter, defaults from the preset: the
    config keys that are parameters (cloudml.config.pipeline_keys: a key with a single
    implemented value, such as optimizer, is not one), then EXTRA_PARAMS."""
    flat = load_config(preset).flat()
    hints = {k: t for cls in SECTIONS.values() for k, t in typing.get_type_hints(cls).items()}
    params = {key: (_param_type(hints[key]), flat[key]) for key in pipeline_keys()}
    params.update(EXTRA_PARAMS)
    return params


def parameter_help() -> dict[str, str]:
    """{parameter: description} for every pipeline parameter (what the UI shows)."""
    config_help = key_help()
    return {**{k: config_help[k] for k in pipeline_keys()}, **EXTRA_HELP}


def args_docstring(summary: str, names: list[str], lead: dict[str, str] | None = None) -> str:
    """A Google-style docstring (summary, then "Args:" with one entry per name): kfp turns
    its Args section into the inputs' `description` fields of the compiled spec."""
    helps = {**(lead or {}), **parameter_help()}
    lines = [summary, "", "Args:"]
    lines += [f"    {n}: {' '.join(helps[n].split())}" for n in names]
    return "\n".join(lines)


def _with_env(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """MinIO credentials from the Secret and settings from the ConfigMap, as env only."""
    kubernetes.use_secret_as_env(task, platform.MINIO_SECRET_NAME, dict(platform.MINIO_SECRET_ENV))
    kubernetes.use_config_map_as_env(
        task, platform.SETTINGS_CONFIGMAP, {k: k for k in SETTINGS_KEYS}, optional=True
    )
    return task


def threads_for(cpu: str) -> int:
    """Compute threads for a task's CPU request ("500m" -> 1, "4" -> 4). A request without a
    limit gives the container no CFS quota to read (cloudml.threads), so the task is told."""
    n = int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    return max(1, int(n))


def _on_cpu(task: dsl.PipelineTask, res: dict[str, str]) -> dsl.PipelineTask:
    """CPU and memory requests, and as many compute threads as CPUs requested."""
    task.set_cpu_request(res["cpu"]).set_memory_request(res["memory"])
    return task.set_env_variable("CLOUDML_THREADS", str(threads_for(res["cpu"])))


def _on_gpu(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """One GPU, the GPU pool's node selector and toleration."""
    pool = platform.gpu_pool()
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(pool.gpus_per_task)
    _on_cpu(task, GPU_TASK)
    kubernetes.add_node_selector(task, pool.label_key, pool.label_value)
    kubernetes.add_toleration(
        task, key=pool.taint_key, operator="Equal", value=pool.taint_value, effect=pool.taint_effect
    )
    return task


def _retried(task: dsl.PipelineTask, retry: dict[str, Any] | None) -> dsl.PipelineTask:
    """The task with the retry policy `retry` (RETRY's keys); None leaves it unretried."""
    return task.set_retry(**retry) if retry else task


def _resolved_config(preset: str, p: dict[str, Any]) -> dsl.PipelineTask:
    """A resolve-config task over the config parameters in `p` (pipeline channels)."""
    task = resolve_config(preset=preset, **{k: v for k, v in p.items() if k not in EXTRA_PARAMS})
    return _on_cpu(task.set_display_name("resolve-config"), SMALL_TASK)


def _ingest_flights(
    preset: str, p: dict[str, Any], cfg: dsl.PipelineTask, retry: dict[str, Any] | None
) -> dsl.PipelineTask:
    """The fan-out: fingerprint + ingest per flight, after `cfg`; returns the ingest task
    (its `shard` outputs are collected by the caller)."""
    # Fan-out: one ingest per flight. Caching: ingest's real input is external data
    # (raw_uri/<flight>/) that KFP's cache key cannot see, so an uncached fingerprint task
    # hashes it first (on MinIO: the sha256 of the flight's stored manifest, no download) and
    # ingest takes that hash as an input. Unchanged raw data + unchanged config = cache hit;
    # changed raw files = new fingerprint = re-ingest.
    # The loop body resolves the config itself (from pipeline parameters) instead of taking
    # cfg.output: kfp 2.17's local runner replaces every task-output input of a ParallelFor
    # body with the loop item (kfp/local/orchestrator/task_spec_utils.py,
    # create_parameter_loop_iteration_task_spec), which would hand ingest a flight name as
    # its config. `.after(cfg)` keeps the up-front validation ordering.
    with dsl.ParallelFor(p["flights"], name="ingest-each-flight") as flight:
        cfg_in_loop = _resolved_config(preset, p).after(cfg)
        fp = fingerprint(raw_uri=p["raw_uri"], flight=flight).after(cfg)
        _with_env(
            _on_cpu(fp.set_display_name("fingerprint").set_caching_options(False), SMALL_TASK)
        )
        ing = ingest(
            raw_uri=p["raw_uri"],
            flight=flight,
            config_json=cfg_in_loop.output,
            raw_fingerprint=fp.output,
        )
        ing.set_display_name("ingest")
        _with_env(_on_cpu(_retried(ing, retry), CPU_TASK))
    return ing


def _train_member(preset: str, p: dict[str, Any], shards: Any, seed: Any, retry: Any) -> Any:
    """One member: its config (the run's, with its own seed), pretrain, finetune on the GPU
    pool; returns the finetune task."""
    cfg = _resolved_config(preset, {**p, "seed": seed})
    # No run id among the inputs (KFP's cache key): the stage state is keyed by code, config
    # and data inside the task (steps.common.training_state_key), so an unchanged re-run is
    # a cache hit and a retry on a new pod still resumes.
    pre = pretrain(shards=shards, config_json=cfg.output)
    _with_env(_on_gpu(_retried(pre.set_display_name("pretrain"), retry)))
    fin = finetune(shards=shards, config_json=cfg.output, pretrained=pre.outputs["model"])
    return _with_env(_on_gpu(_retried(fin.set_display_name("finetune"), retry)))


def build_members(preset: str, retry: dict[str, Any] | None, parallelism: int):
    """The sub-pipeline that trains the ensemble: member-seeds, then one pretrain + finetune
    chain per member seed under a ParallelFor (at most `parallelism` members at once);
    takes the shards and every config parameter, returns the finetuned members.

    A sub-pipeline because kfp 2.17 cannot compile a Collected (the ingest fan-in) used inside
    another ParallelFor; as a sub-pipeline input the shards are a plain artifact list."""
    names = [k for k in pipeline_parameters(preset) if k not in EXTRA_PARAMS]

    def members(shards: dsl.Input[list[dsl.Dataset]], *args: Any):
        p = dict(zip(names, args, strict=True))
        seeds = member_seeds(seed=p["seed"], ensemble_size=p["ensemble_size"])
        _on_cpu(seeds.set_display_name("member-seeds"), SMALL_TASK)
        with dsl.ParallelFor(
            seeds.output, name="train-each-member", parallelism=parallelism
        ) as seed:
            fin = _train_member(preset, p, shards, seed, retry)
        return dsl.Collected(fin.outputs["model"])

    types = {k: t for k, (t, _) in pipeline_parameters(preset).items()}
    sig = [
        inspect.Parameter(
            "shards",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=dsl.Input[list[dsl.Dataset]],
        )
    ]
    sig += [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=types[n])
            for n in names]  # fmt: skip
    members.__signature__ = inspect.Signature(sig, return_annotation=list[dsl.Model])
    members.__annotations__ = {"shards": dsl.Input[list[dsl.Dataset]],
                               **{n: types[n] for n in names},
                               "return": list[dsl.Model]}  # fmt: skip
    members.__name__ = "train_members"
    members.__doc__ = (
        args_docstring(
            "The ensemble's members, in parallel: one pretrain + finetune chain per member seed.",
            ["shards", *names],
            {"shards": "Every flight's processed shard (the ingest fan-in)."},
        )
        + "\n\nReturns:\n    Output: The finetuned members (one Model per seed)."
    )
    return dsl.pipeline(name="train-members")(members)


def _graph(
    preset: str, p: dict[str, Any], retry: dict[str, Any] | None, train_members: Any
) -> None:
    """The DAG; `p` maps parameter names to pipeline channels; `retry` None = no retries;
    `train_members` is build_members' sub-pipeline (built outside this pipeline's context)."""

    cfg = _resolved_config(preset, p)
    config_json = cfg.output
    ing = _ingest_flights(preset, p, cfg, retry)

    def shards() -> dsl.Collected:
        # one Collected per consumer: the compiler resolves each use separately
        return dsl.Collected(ing.outputs["shard"])

    config_keys = [k for k in p if k not in EXTRA_PARAMS]
    members = train_members(shards=shards(), **{k: p[k] for k in config_keys})
    members.set_display_name("train-members")

    ev = evaluate(
        shards=shards(),
        config_json=config_json,
        members=members.output,
        threshold=p["threshold"],
        min_std_ratio=p["min_std_ratio"],
        beat_baseline=p["beat_baseline"],
        skill_margin=p["skill_margin"],
        run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    )
    _with_env(_on_gpu(_retried(ev.set_display_name("evaluate"), retry)))

    # No retry: a failed gate is a verdict, not a transient fault.
    g = gate(
        r2=ev.outputs["r2"],
        r2_lo=ev.outputs["r2_lo"],
        r2_hi=ev.outputs["r2_hi"],
        std_ratio=ev.outputs["std_ratio"],
        baseline_r2=ev.outputs["baseline_r2"],
        threshold=p["threshold"],
        min_std_ratio=p["min_std_ratio"],
        beat_baseline=p["beat_baseline"],
        skill_margin=p["skill_margin"],
        flight=p["validation_flight"],
        pipeline=preset,
    )
    _with_env(_on_cpu(g.set_display_name("gate"), SMALL_TASK))

    # Only a passed gate reaches promotion; the champion pointer moves only if R² beats it.
    # Not cached: the decision depends on the store's current champion, not on the inputs.
    pr = promote(
        model=ev.outputs["model"], pipeline=preset, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        r2=ev.outputs["r2"],
    ).after(g)  # fmt: skip
    pr.set_display_name("promote").set_caching_options(False)
    _with_env(_on_cpu(_retried(pr, retry), SMALL_TASK))


def pipeline_name(preset: str) -> str:
    """The pipeline's name on Kubeflow (and the prefix of its versions and runs)."""
    return f"cloudml-{preset}"


def build_pipeline(preset: str = "tuned", retries: bool = True, parallelism: int | None = None):
    """The training pipeline for `preset` as a KFP graph component (callable, compilable).

    retries=False drops the retry policies: the local runner honours them with real backoff
    sleeps, and a local failure is a bug to see at once, not a preempted node.
    `parallelism`: members trained at once (default cluster.settings.gpu_parallelism(), one
    GPU each); the local runner honours it too, so a CPU run asks for 1.
    """
    params = pipeline_parameters(preset)
    names = list(params)
    retry = RETRY if retries else None
    train_members = build_members(preset, retry, parallelism or platform.gpu_parallelism())

    def training(*args: Any) -> None:
        _graph(preset, dict(zip(names, args, strict=True)), retry, train_members)

    sig = [
        inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d, annotation=t)
        for n, (t, d) in params.items()
    ]
    training.__signature__ = inspect.Signature(sig)  # type: ignore[attr-defined]
    training.__annotations__ = {n: t for n, (t, _) in params.items()}
    training.__name__ = pipeline_name(preset).replace("-", "_")
    training.__doc__ = args_docstring(
        f"CloudML cloud-base-height training, preset {preset}: ingest every flight, train an "
        "ensemble of ensemble_size members (pretrain + finetune each, on the GPU pool), "
        "evaluate on validation_flight, gate, promote.",
        names,
    )
    return dsl.pipeline(name=pipeline_name(preset))(training)


def compile_pipeline(preset: str, out: Path) -> Path:
    """Compile `preset`'s pipeline to YAML at `out` (written atomically); an unknown preset
    or a bad value raises ConfigError (listing the known presets) before anything is written."""
    from kfp import compiler

    from cloudml.fileio import atomic_path

    load_config(preset)  # validates the preset name and values first
    out = Path(out)
    with atomic_path(out) as tmp:
        yaml_tmp = tmp.with_suffix(".yaml")
        compiler.Compiler().compile(build_pipeline(preset), str(yaml_tmp))
        yaml_tmp.replace(tmp)
    return out


if __name__ == "__main__":  # python -m pipelines.training [preset] [out.yaml]
    name = sys.argv[1] if len(sys.argv) > 1 else "tuned"
    dest = Path(sys.argv[2] if len(sys.argv) > 2 else f"build/pipelines/{name}.yaml")
    print(compile_pipeline(name, dest))
