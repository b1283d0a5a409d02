"""The CloudML training pipeline, compiled once per preset.

    resolve-config -> train-evaluate (pipelines/chain.py: ingest each flight, train the
        ensemble's members in parallel, evaluate, selection score) -> gate -> promote

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

from kfp import dsl

from cloudml.cluster import settings as platform
from cloudml.config import SECTIONS, key_help, load_config, pipeline_keys
from cloudml.experiments import base_preset, is_experiment
from cloudml.gate import (
    DEFAULT_BEAT_BASELINE,
    DEFAULT_MIN_STD_RATIO,
    DEFAULT_SKILL_MARGIN,
    DEFAULT_THRESHOLD,
)
from components.config import resolve_config
from components.gate import gate
from components.promote import promote
from pipelines.chain import (  # noqa: F401 - SETTINGS_KEYS, RETRY: the pipeline's contract
    CPU_TASK,
    GPU_TASK,
    RETRY,
    SETTINGS_KEYS,
    SMALL_TASK,
    build_train_evaluate,
    on_cpu,
    retried,
    threads_for,
    with_env,
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


def _resolved_config(preset: str, p: dict[str, Any]) -> dsl.PipelineTask:
    """A resolve-config task over the config parameters in `p` (pipeline channels)."""
    known = set(pipeline_keys())
    task = resolve_config(preset=preset, **{k: v for k, v in p.items() if k in known})
    return on_cpu(task.set_display_name("resolve-config"), SMALL_TASK)


def gate_settings(p: dict[str, Any]) -> dict[str, Any]:
    """The gate parameters the chain's evaluate and the gate take, as pipeline channels."""
    return {k: p[k] for k in ("threshold", "min_std_ratio", "beat_baseline", "skill_margin")}


def gate_and_promote(
    results: dsl.PipelineTask, p: dict[str, Any], pipeline: str, retry: dict[str, Any] | None
) -> None:
    """gate on `results`' float outputs (r2, its interval, std_ratio, baseline_r2), then
    promote its `model` as `pipeline`'s challenger."""
    # No retry: a failed gate is a verdict, not a transient fault.
    g = gate(
        **{k: results.outputs[k] for k in ("r2", "r2_lo", "r2_hi", "std_ratio", "baseline_r2")},
        **gate_settings(p),
        flight=p["validation_flight"],
        pipeline=pipeline,
    )
    with_env(on_cpu(g.set_display_name("gate"), SMALL_TASK))
    # Only a passed gate reaches promotion; the champion pointer moves only if R² beats it.
    # Not cached: the decision depends on the store's current champion, not on the inputs.
    pr = promote(
        model=results.outputs["model"], pipeline=pipeline,
        run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, r2=results.outputs["r2"],
    ).after(g)  # fmt: skip
    pr.set_display_name("promote").set_caching_options(False)
    with_env(on_cpu(retried(pr, retry), SMALL_TASK))


def _graph(preset: str, p: dict[str, Any], retry: dict[str, Any] | None, chain: Any) -> None:
    """The DAG; `p` maps parameter names to pipeline channels; `retry` None = no retries;
    `chain` is the train-evaluate sub-pipeline (built outside this pipeline's context)."""
    cfg = _resolved_config(preset, p)  # every problem listed before any data moves
    te = chain(config_json=cfg.output, flights=p["flights"], raw_uri=p["raw_uri"],
               **gate_settings(p))  # fmt: skip
    te.set_display_name("train-evaluate")
    gate_and_promote(te, p, preset, retry)


def signed(fn: Any, params: dict[str, tuple[type, Any]], name: str, doc: str) -> Any:
    """`fn(*args)` with the signature, annotations, name and docstring kfp compiles into the
    pipeline's parameters (one per entry of params, with its default)."""
    sig = [
        inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d, annotation=t)
        for n, (t, d) in params.items()
    ]
    fn.__signature__ = inspect.Signature(sig)
    fn.__annotations__ = {n: t for n, (t, _) in params.items()}
    fn.__name__ = name.replace("-", "_")
    fn.__doc__ = doc
    return dsl.pipeline(name=name)(fn)


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
    if is_experiment(preset):
        from pipelines.experiments import build_experiment

        return build_experiment(preset, retries, parallelism)
    params = pipeline_parameters(preset)
    names = list(params)
    retry = RETRY if retries else None
    chain = build_train_evaluate(retry, parallelism or platform.gpu_parallelism())

    def training(*args: Any) -> None:
        _graph(preset, dict(zip(names, args, strict=True)), retry, chain)

    doc = args_docstring(
        f"CloudML cloud-base-height training, preset {preset}: ingest every flight, train an "
        "ensemble of ensemble_size members (pretrain + finetune each, on the GPU pool), "
        "evaluate on validation_flight, gate, promote.",
        names,
    )
    return signed(training, params, pipeline_name(preset), doc)


def compile_pipeline(preset: str, out: Path) -> Path:
    """Compile `preset`'s pipeline to YAML at `out` (written atomically); an unknown preset
    or a bad value raises ConfigError (listing the known presets) before anything is written."""
    from kfp import compiler

    from cloudml.fileio import atomic_path

    load_config(base_preset(preset))  # validates the preset name and values first
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
